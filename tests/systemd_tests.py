#!/usr/bin/python3
"""dashd under systemd, and the files shipped for it. One check per run:

  systemd_tests.py units SYSTEMD_DIR DASHD     systemd-analyze verify, the
                                               directives the units must
                                               (not) have, sysusers, tmpfiles
  systemd_tests.py socket-activation DASHD DASHCTL
  systemd_tests.py notify DASHD DASHCTL        NOTIFY_SOCKET: READY=1,
                                               STATUS=, WATCHDOG=1, STOPPING=1
  systemd_tests.py check-config SYSTEMD_DIR DASHD
  systemd_tests.py exports LIBDASH_SO          nm -D: only dash_* symbols

Exit 0 passed, 1 failed, 77 skipped (a tool missing or unable to run in
this container; the reason is printed as "skipped: ...").
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


class Skip(Exception):
    pass


def fail(msg):
    raise AssertionError(msg)


def run(args, **kw):
    kw.setdefault("timeout", 60)
    return subprocess.run(args, capture_output=True, text=True, **kw)


def unit_directives(path):
    """[(section, key, value)] of a unit file, comments dropped."""
    out, section = [], None
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def check_units(systemd_dir, dashd):
    systemd_dir = os.path.abspath(systemd_dir)
    service = os.path.join(systemd_dir, "dashd.service")
    sock = os.path.join(systemd_dir, "dashd.socket")

    # What the units must say, checked without systemd.
    svc = unit_directives(service)
    want = [
        ("Service", "Type", "notify"),
        ("Service", "ExecStart", "/usr/bin/dashd --config /etc/dashd/dashd.conf"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "Restart", "on-failure"),
        ("Service", "WatchdogSec", "30"),
        ("Service", "User", "dashd"),
        ("Service", "Group", "dash"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "PrivateTmp", "yes"),
        ("Service", "RestrictAddressFamilies", "AF_UNIX"),
        ("Service", "CapabilityBoundingSet", ""),
        ("Service", "SystemCallFilter", "@system-service"),
        ("Service", "DevicePolicy", "closed"),
        ("Service", "DeviceAllow", "char-nvidia* rw"),
        ("Service", "DeviceAllow", "/dev/nvidia-uvm rw"),
        ("Service", "DeviceAllow", "/dev/nvidiactl rw"),
        ("Service", "UMask", "0077"),
        ("Service", "LimitNOFILE", "65536"),
    ]
    for d in want:
        if d not in svc:
            fail("dashd.service lacks %s=%s in [%s]" % (d[1], d[2], d[0]))
    for _, key, _ in svc:
        # RuntimeDirectory= would remove the socket's directory on every
        # restart; PrivatePIDs= breaks CUDA IPC.
        if key in ("RuntimeDirectory", "PrivatePIDs"):
            fail("dashd.service must not set %s=" % key)
    sck = unit_directives(sock)
    for d in [("Socket", "ListenStream", "/run/dashd/dashd.sock"),
              ("Socket", "SocketMode", "0660"),
              ("Socket", "SocketUser", "dashd"),
              ("Socket", "SocketGroup", "dash"),
              ("Socket", "DirectoryMode", "0750")]:
        if d not in sck:
            fail("dashd.socket lacks %s=%s" % (d[1], d[2]))

    # systemd-analyze verify, on copies whose ExecStart names the built
    # binary (verify insists that the program exists).
    if shutil.which("systemd-analyze") is None:
        raise Skip("systemd-analyze is not installed (apt-get install systemd)")
    tmp = tempfile.mkdtemp()
    try:
        good = os.path.join(tmp, "dashd-probe.service")
        with open(good, "w") as f:
            f.write("[Service]\nExecStart=/bin/true\n")
        r = run(["systemd-analyze", "verify", "--man=no", good])
        if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
            raise Skip("systemd-analyze verify cannot run here: %s" %
                       (r.stderr.strip() or r.stdout.strip()))
        # The tool must report a bad directive, or a pass proves nothing.
        with open(good, "w") as f:
            f.write("[Service]\nType=notifyx\nExecStart=/bin/true\n")
        r = run(["systemd-analyze", "verify", "--man=no", good])
        if not (r.stderr.strip() or r.stdout.strip()):
            raise Skip("systemd-analyze verify reports nothing here")
        os.unlink(good)
        for src in (service, sock):
            text = open(src).read().replace("/usr/bin/dashd", dashd)
            with open(os.path.join(tmp, os.path.basename(src)), "w") as f:
                f.write(text)
        r = run(["systemd-analyze", "verify", "--man=no",
                 os.path.join(tmp, "dashd.socket"),
                 os.path.join(tmp, "dashd.service")], cwd=tmp)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or out:
            fail("systemd-analyze verify: rc %d\n%s" % (r.returncode, out))
        print("systemd-analyze verify: clean")

        # sysusers.d and tmpfiles.d, applied to an empty root.
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        os.makedirs(os.path.join(root, "run"))
        r = run(["systemd-sysusers", "--root", root,
                 os.path.join(systemd_dir, "dashd.sysusers")])
        if r.returncode != 0:
            fail("systemd-sysusers: %s" % r.stderr)
        users = {l.split(":")[0]: l.split(":") for l in
                 open(os.path.join(root, "etc/passwd"))}
        groups = {l.split(":")[0]: l.split(":") for l in
                  open(os.path.join(root, "etc/group"))}
        if "dashd" not in users or "dash" not in groups:
            fail("sysusers made %s / %s" % (list(users), list(groups)))
        if users["dashd"][3] != groups["dash"][2]:
            fail("dashd's primary group is not dash")
        if os.geteuid() != 0:
            print("tmpfiles: not checked (needs root to chown)")
            return
        r = run(["systemd-tmpfiles", "--root", root, "--create",
                 os.path.join(systemd_dir, "dashd.tmpfiles")])
        if r.returncode != 0:
            fail("systemd-tmpfiles: %s" % r.stderr)
        st = os.stat(os.path.join(root, "run/dashd"))
        if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (
                0o750, int(users["dashd"][2]), int(groups["dash"][2])):
            fail("/run/dashd is %o %d:%d" % (st.st_mode & 0o7777, st.st_uid,
                                              st.st_gid))
    finally:
        shutil.rmtree(tmp)


def ping(dashctl, path, timeout=10):
    try:
        return run([dashctl, "--socket", path, "ping"], timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("dashctl ping %s: no answer in %d s" % (path, timeout))


def check_socket_activation(dashd, dashctl):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        raise Skip("systemd-socket-activate is not installed")
    tmp = tempfile.mkdtemp()
    p = None
    try:
        sock = os.path.join(tmp, "activated.sock")
        # --socket names another path: a daemon that ignored systemd's fd
        # would listen there and the ping below would not be answered.
        log = open(os.path.join(tmp, "log"), "w")
        p = subprocess.Popen([tool, "-l", sock, dashd, "--socket",
                              os.path.join(tmp, "own.sock")],
                             stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if p.poll() is not None or time.monotonic() > deadline:
                raise Skip("systemd-socket-activate cannot run here: %s" %
                           open(os.path.join(tmp, "log")).read().strip())
            time.sleep(0.02)
        r = ping(dashctl, sock)
        if r.returncode != 0:
            fail("ping through the activated socket: %s\nlog:\n%s" %
                 (r.stderr, open(os.path.join(tmp, "log")).read()))
        r = ping(dashctl, sock)  # the daemon keeps serving
        if r.returncode != 0:
            fail("second ping: %s" % r.stderr)
        if os.path.exists(os.path.join(tmp, "own.sock")):
            fail("dashd bound its own socket instead of systemd's")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        p = None
        logtext = open(os.path.join(tmp, "log")).read()
        if rc != 0:
            fail("dashd exited %d:\n%s" % (rc, logtext))
        if "socket from systemd" not in logtext:
            fail("the log does not say the socket came from systemd:\n" +
                 logtext)
        # systemd owns the socket file: dashd leaves it.
        if not os.path.exists(sock):
            fail("dashd unlinked systemd's socket at stop")
        print("socket activation: served and left the socket in place")
    finally:
        if p is not None:
            p.kill()
            p.wait()
        shutil.rmtree(tmp)


def recv_until(ns, prefix, timeout):
    """Messages received until one has a line starting with prefix."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no %r within %.1f s; got %r" % (prefix, timeout, got))
        ns.settimeout(left)
        try:
            msg = ns.recv(4096).decode()
        except socket.timeout:
            continue
        got.append(msg)
        if any(line.startswith(prefix) for line in msg.split("\n")):
            return got


def start_notified(dashd, tmp, ns_path, env_extra):
    env = dict(os.environ)
    for k in ("LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(k, None)
    env["NOTIFY_SOCKET"] = ns_path
    env.update(env_extra)
    log = open(os.path.join(tmp, "log"), "w")
    return subprocess.Popen([dashd, "--socket", os.path.join(tmp, "sock")],
                            stdout=log, stderr=log, env=env)


def check_notify(dashd, dashctl):
    tmp = tempfile.mkdtemp()
    p = None
    try:
        ns_path = os.path.join(tmp, "notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(ns_path)

        # With a watchdog of 400 ms: pings every 200 ms.
        p = start_notified(dashd, tmp, ns_path, {"WATCHDOG_USEC": "400000"})
        got = recv_until(ns, "READY=1", 10)
        ready = [m for m in got if "READY=1" in m][0]
        if "MAINPID=%d" % p.pid not in ready:
            fail("READY=1 without MAINPID=%d: %r" % (p.pid, ready))
        r = ping(dashctl, os.path.join(tmp, "sock"))
        if r.returncode != 0:
            fail("dashd is not serving after READY=1: %s" % r.stderr)
        got += recv_until(ns, "STATUS=serving", 5)
        t0 = time.monotonic()
        recv_until(ns, "WATCHDOG=1", 2)
        recv_until(ns, "WATCHDOG=1", 2)
        if time.monotonic() - t0 > 1.5:
            fail("two watchdog pings took %.2f s for a 0.4 s watchdog" %
                 (time.monotonic() - t0))
        p.send_signal(signal.SIGTERM)
        recv_until(ns, "STOPPING=1", 5)
        if p.wait(timeout=10) != 0:
            fail("dashd exited %d" % p.returncode)
        p = None

        # Without a watchdog: READY=1, and no WATCHDOG=1 at all.
        p = start_notified(dashd, tmp, ns_path, {})
        recv_until(ns, "READY=1", 10)
        ns.settimeout(1.0)
        try:
            while True:
                msg = ns.recv(4096).decode()
                if "WATCHDOG=1" in msg:
                    fail("WATCHDOG=1 sent though no watchdog was asked for")
        except socket.timeout:
            pass
        p.send_signal(signal.SIGTERM)
        recv_until(ns, "STOPPING=1", 5)
        if p.wait(timeout=10) != 0:
            fail("dashd exited %d" % p.returncode)
        p = None
        print("notify: READY=1, STATUS=, WATCHDOG=1, STOPPING=1")
    finally:
        if p is not None:
            p.kill()
            p.wait()
        shutil.rmtree(tmp)


def check_config(systemd_dir, dashd):
    conf = os.path.join(systemd_dir, "dashd.conf")
    r = run([dashd, "--check-config", conf])
    if r.returncode != 0:
        fail("--check-config %s: rc %d: %s" % (conf, r.returncode, r.stderr))
    shipped = r.stdout.splitlines()
    r = run([dashd, "--check-config", "/dev/null"])
    if r.returncode != 0:
        fail("--check-config /dev/null: %s" % r.stderr)
    defaults = r.stdout.splitlines()
    if shipped != defaults:
        fail("the shipped config changes a default:\n%s\nvs\n%s" %
             (shipped, defaults))
    if len(defaults) < 10:
        fail("the dump has only %d keys" % len(defaults))
    # Every key of the table, commented out at its default, exactly as
    # the dump writes it.
    lines = [l.strip() for l in open(conf)]
    for line in defaults:
        if "#" + line not in lines:
            fail("dashd.conf lacks the line '#%s'" % line)

    # A broken file: exit 2, the error names file:line:key; nothing runs.
    tmp = tempfile.mkdtemp()
    try:
        bad = os.path.join(tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("# ok\nmax_clients = 8\n\nthreads = -3\n")
        r = run([dashd, "--check-config", bad])
        if r.returncode != 2:
            fail("broken config: rc %d, want 2" % r.returncode)
        if not re.search(re.escape(bad) + r":4:.*threads", r.stderr):
            fail("the error does not name %s:4 and threads: %r" %
                 (bad, r.stderr))
        # The command line is part of what is checked.
        r = run([dashd, "--check-config", conf, "--threads", "7"])
        if r.returncode != 0 or "threads = 7" not in r.stdout.splitlines():
            fail("--threads 7 not in the effective config: %r" % r.stdout)
    finally:
        shutil.rmtree(tmp)
    print("check-config: %d keys" % len(defaults))


def check_exports(lib):
    r = run(["nm", "-D", "--defined-only", lib])
    if r.returncode != 0:
        fail("nm: %s" % r.stderr)
    syms = [l.split() for l in r.stdout.splitlines() if l.strip()]
    if not syms:
        fail("no symbols")
    bad = []
    for s in syms:
        kind, name = s[-2], s[-1].split("@")[0]
        # The version node of the script (DASH_0) is an absolute symbol.
        if kind == "A" and re.fullmatch(r"DASH_\d+", name):
            continue
        if not name.startswith("dash_"):
            bad.append(name)
    if bad:
        fail("libdash exports non-dash_ symbols: %s" % " ".join(bad))
    if not any(s[-1].split("@")[0] == "dash_connect" for s in syms):
        fail("dash_connect is not exported")
    print("exports: %d symbols, all dash_*" % len(syms))


def main():
    what, args = sys.argv[1], sys.argv[2:]
    checks = {"units": check_units,
              "socket-activation": check_socket_activation,
              "notify": check_notify,
              "check-config": check_config,
              "exports": check_exports}
    try:
        checks[what](*args)
    except Skip as e:
        print("skipped: %s" % e)
        return SKIP
    except AssertionError as e:
        print("FAILED: %s" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
