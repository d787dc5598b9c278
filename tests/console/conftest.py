"""Fixtures of the console's browser suite (docs/console.md, ci/console-test.sh).

One keygate per test session, spawned like ci/schemathesis.sh does (`serve --dev` on
127.0.0.1:0 with a fresh data directory and SoftHSM token) but serving HTTPS with the dev
identity, because `__Host-` cookies need a secure origin. Rotation needs 2 approvals from
role admin, so the two-approver journey has something to vote on; JWKS may be fetched over
plain HTTP from loopback (`oauth.allow_insecure_loopback_jwks`), for the IdP journey.
"""
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "console"
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Registered before any page script runs (through the DevTools protocol, so the CSP does
# not apply to it): every CSP violation the page reports is kept for the test to read.
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


class Keygate:
    def __init__(self, base, admin_key, cert, data):
        self.base, self.admin_key, self.cert, self.data = base, admin_key, cert, data

    def url(self, path):
        return self.base + path

    def api(self, method, path, key=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["x-api-key"] = key
        return requests.request(method, self.url(path), headers=headers, verify=self.cert,
                                allow_redirects=False, timeout=30, **kw)

    def user(self, name, role):
        r = self.api("POST", "/api/v1/users", self.admin_key,
                     json={"username": name, "password": PASSWORD, "role": role})
        assert r.status_code == 201, r.text


@pytest.fixture(scope="session")
def keygate():
    binary = os.environ.get("KEYGATE_BIN", str(ROOT / "target" / "debug" / "keygate"))
    data = tempfile.mkdtemp(prefix="keygate-console-")
    env = dict(os.environ, RUST_LOG="warn",
               KEYGATE__APPROVALS__ROTATE__REQUIRED="2",
               KEYGATE__APPROVALS__ROTATE__APPROVERS="role:admin",
               KEYGATE__OAUTH__ALLOW_INSECURE_LOOPBACK_JWKS="true")
    out = open(os.path.join(data, "out"), "w+")
    err = open(os.path.join(data, "err"), "w+")
    proc = subprocess.Popen([binary, "--data-dir", data, "serve", "--dev", "--listen", "127.0.0.1:0"],
                            stdout=out, stderr=err, env=env)
    text = ""
    for _ in range(300):
        out.seek(0)
        text = out.read()
        if "listening on" in text:
            break
        time.sleep(0.2)
    base = re.search(r"keygate listening on (\S+)", text)
    key = re.search(r"kg_[A-Za-z0-9_-]+", text)
    if not base or not key:
        err.seek(0)
        proc.kill()
        raise RuntimeError("keygate did not start: " + err.read()[-2000:])
    yield Keygate(base.group(1).rstrip("/"), key.group(0), os.path.join(data, "tls", "cert.pem"), data)
    proc.terminate()
    proc.wait(timeout=20)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    # launch() runs Chromium on a fresh temporary --user-data-dir of its own (Playwright
    # refuses the flag in args), removed when the browser closes.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    """One browser context (one person), with CSP violations and dialogs collected."""

    def __init__(self, browser, keygate, width=1280, height=800):
        self.keygate = keygate
        self.ctx = browser.new_context(ignore_https_errors=True, accept_downloads=True,
                                       viewport={"width": width, "height": height})
        self.ctx.add_init_script(CSP_PROBE)
        self.page = self.ctx.new_page()
        self.console_csp = []
        self.dialogs = []
        self.page.on("console", lambda m: self.console_csp.append(m.text)
                     if "Content Security Policy" in m.text else None)
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def go(self, path):
        self.page.goto(self.keygate.url(path))
        self.check_csp()

    def check_csp(self):
        reported = self.page.evaluate("window.__csp || []")
        assert reported == [] and self.console_csp == [], (reported, self.console_csp)

    def shot(self, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / (name + ".png")), full_page=True)

    def sign_in_with_key(self, key):
        self.go("/console/sign-in")
        self.page.click("summary")
        self.page.fill("input[name=api_key]", key)
        self.page.click("text=Sign in with API key")
        self.page.wait_for_url("**/console/**")
        self.check_csp()

    def sign_in(self, user, password=PASSWORD):
        self.go("/console/sign-in")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_load_state()
        self.check_csp()

    def cookie(self):
        return next(c for c in self.ctx.cookies() if c["name"] == "__Host-keygate_console")

    def close(self):
        self.check_csp()
        assert self.dialogs == [], self.dialogs
        self.ctx.close()


@pytest.fixture()
def console(browser, keygate):
    made = []

    def make(**kw):
        c = Console(browser, keygate, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
