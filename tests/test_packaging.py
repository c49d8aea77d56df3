"""Packaging contracts: no network access at import."""

import subprocess
import sys
import textwrap


def test_importing_tmzoo_makes_no_network_access_and_starts_no_thread():
    code = textwrap.dedent(
        """
        import socket, threading, time
        attempts = []
        def refuse(self, address, *args):
            attempts.append(address)
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import tmzoo, tmzoo.chem, tmzoo.models, tmzoo.datamodules, tmzoo.tasks, tmzoo.cli.main
        time.sleep(0.5)  # a version-check thread would have connected by now
        print(len(attempts), sorted(t.name for t in threading.enumerate() if t.name != "MainThread"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, threads = out.stdout.strip().split(" ", 1)
    assert count == "0", f"network access at import: {out.stdout}"
    assert threads == "[]", f"threads started at import: {threads}"
