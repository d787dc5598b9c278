"""The console in a real browser (Debian's Chromium driven by Playwright): one test per
journey of docs/console.md, and the security checks. Every page visit asserts that the
browser reported no CSP violation; screenshots go to docs/console/."""
import json
import http.server
import threading
import time
import uuid

import jwt
import requests

from conftest import PASSWORD


def key_works(keygate, secret):
    return keygate.api("GET", "/api/v1/api-keys", secret).status_code == 200


def test_sign_in_create_see_once_use_regenerate_and_delete_an_api_key(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/api-keys")
    c.shot("api-keys")
    c.page.click("text=Add an API key")
    c.page.fill("input[name=name]", "ci-journey")
    c.page.fill("input[name=description]", "made in the browser")
    c.page.select_option("select[name=role]", "admin")
    c.page.click("button:has-text('Add')")
    secret = c.page.inner_text("#new-secret").strip()
    assert secret.startswith("kg_")
    assert c.page.is_visible("button[data-copy=new-secret]")
    c.check_csp()
    c.shot("api-key-created")
    assert key_works(keygate, secret)
    # Shown once: the list never carries it.
    c.go("/console/api-keys")
    assert secret not in c.page.content()
    assert "ci-journey" in c.page.content()
    c.page.click("a[aria-label='Regenerate ci-journey']")
    c.check_csp()
    c.page.click("button:has-text('Regenerate the API key')")
    fresh = c.page.inner_text("#new-secret").strip()
    assert fresh.startswith("kg_") and fresh != secret
    assert not key_works(keygate, secret), "the old secret still works"
    assert key_works(keygate, fresh)
    c.go("/console/api-keys")
    c.page.click("a[aria-label='Delete ci-journey']")
    c.shot("api-key-delete-confirm")
    c.page.click("button:has-text('Delete the API key')")
    c.page.wait_for_url("**/console/api-keys?done=deleted")
    assert not key_works(keygate, fresh)


def test_edit_a_key_role_asks_for_confirmation(keygate, console):
    r = keygate.api("POST", "/api/v1/api-keys", keygate.admin_key,
                    json={"name": "to-edit", "role": "read-only"})
    assert r.status_code == 201
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/api-keys")
    c.page.click("a[aria-label='Edit to-edit']")
    c.page.fill("input[name=description]", "edited")
    c.page.select_option("select[name=role]", "help-desk")
    c.page.click("button:has-text('Save')")
    assert "Confirm the role change" in c.page.content()
    c.check_csp()
    c.page.click("button:has-text('Change the role')")
    c.page.wait_for_url("**/console/api-keys?done=updated")
    keys = keygate.api("GET", "/api/v1/api-keys", keygate.admin_key).json()
    k = next(k for k in keys if k["name"] == "to-edit")
    assert (k["role"], k["description"]) == ("help-desk", "edited")


def idp_token(key, issuer, kid=None):
    now = int(time.time())
    return jwt.encode({"iss": issuer, "sub": "u1", "aud": "keygate-api", "iat": now,
                       "exp": now + 300, "roles": ["readers"]}, key, algorithm="ES256",
                      headers={"kid": kid} if kid else None)


def test_add_oauth_servers_from_a_pem_file_and_a_loopback_jwks_uri(keygate, console, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pem_key, jwks_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem_file = tmp_path / "idp.pem"
    pem_file.write_bytes(pem_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(jwks_key.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256", "use": "sig"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = console()
        c.sign_in_with_key(keygate.admin_key)
        for name, source in (("pem-idp", "pem"), ("jwks-idp", "jwks")):
            c.go("/console/oauth-servers")
            if c.page.locator("details[open]").count() == 0:
                c.page.click("text=Add an OAuth server")
            c.page.fill("input[name=name]", name)
            c.page.fill("input[name=issuer]", "https://%s.example" % name)
            c.page.fill("input[name=audience]", "keygate-api")
            if source == "pem":
                # The PEM file itself, through the form's file input (multipart).
                c.page.set_input_files("input[name=public_key_file]", str(pem_file))
            else:
                c.page.fill("input[name=jwks_uri]", "http://127.0.0.1:%d/jwks" % srv.server_port)
            c.page.fill("textarea[name=role_mapping]", "readers=read-only")
            c.page.click("form.stack button:has-text('Add')")
            c.page.wait_for_url("**/console/oauth-servers?done=updated")
        c.shot("oauth-servers")
        html = c.page.content()
        assert "pem-idp" in html and "jwks-idp" in html and "readers → read-only" in html
        for key, issuer, kid in ((pem_key, "https://pem-idp.example", None),
                                 (jwks_key, "https://jwks-idp.example", "k1")):
            r = requests.get(keygate.url("/api/v1/auth/sessions"), verify=keygate.cert, timeout=30,
                             headers={"x-oauth2-token": idp_token(key, issuer, kid)})
            assert r.status_code == 200, (issuer, r.text)
        # The JWKS cache state: fetched for the token above, holding kid k1.
        c.go("/console/oauth-servers?q=jwks-idp")
        assert "k1" in c.page.inner_text("tbody") and "Fetched" in c.page.inner_text("tbody")
        c.page.click("button[aria-label='Fetch the JWKS of jwks-idp now']")
        c.page.wait_for_url("**/console/oauth-servers?done=fetched")
        c.check_csp()
        c.go("/console/oauth-servers")
        c.shot("oauth-servers-jwks-cache")
    finally:
        srv.shutdown()


def test_edit_an_oauth_server_rekeyed_from_an_uploaded_pem_file(keygate, console, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    old_key, new_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def pem(k):
        return k.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    r = keygate.api("POST", "/api/v1/oauth-servers", keygate.admin_key,
                    json={"name": "to-edit-idp", "issuer": "https://edit-idp.example",
                          "audience": "keygate-api", "public_key_pem": pem(old_key),
                          "role_mapping": {"readers": "read-only"}})
    assert r.status_code == 201, r.text
    new_file = tmp_path / "new.pem"
    new_file.write_text(pem(new_key))
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/oauth-servers")
    c.page.click("a[aria-label='Edit to-edit-idp']")
    c.check_csp()
    c.page.fill("input[name=name]", "edited-idp")
    c.page.set_input_files("input[name=public_key_file]", str(new_file))
    c.page.fill("textarea[name=role_mapping]", "readers=read-only\nops=help-desk")
    c.shot("oauth-server-edit")
    c.page.click("button:has-text('Save')")
    c.page.wait_for_url("**/console/oauth-servers?done=updated")
    assert "ops → help-desk" in c.page.content()
    for key, ok in ((old_key, False), (new_key, True)):
        r = requests.get(keygate.url("/api/v1/auth/sessions"), verify=keygate.cert, timeout=30,
                         headers={"x-oauth2-token": idp_token(key, "https://edit-idp.example")})
        assert (r.status_code == 200) == ok, r.text


def test_groups_with_members_and_ring_grants(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/groups")
    if c.page.locator("details[open]").count() == 0:
        c.page.click("text=Add a group")
    c.page.fill("input[name=name]", "payments")
    c.page.fill("input[name=description]", "payment gateways")
    c.page.click("form.stack button:has-text('Add')")
    c.page.wait_for_url("**/console/groups/payments?done=updated")
    c.check_csp()
    for who in ("gateway-1", "gateway-2"):
        c.page.fill("#add-member", who)
        c.page.click("button:has-text('Add the member')")
        c.page.wait_for_url("**/console/groups/payments?done=updated")
    c.page.fill("input[name=ring]", "jwt-default")
    c.page.check("input[name=permissions][value=view]")
    c.page.check("input[name=permissions][value=sign]")
    c.page.click("button:has-text('Set the grant')")
    c.page.wait_for_url("**/console/groups/payments?done=updated")
    c.check_csp()
    c.shot("group")
    g = keygate.api("GET", "/api/v1/groups/payments", keygate.admin_key).json()
    assert sorted(m["principal"] for m in g["members"]) == ["gateway-1", "gateway-2"]
    assert g["grants"][0]["permissions"] == ["view", "sign"]
    c.page.click("button[aria-label='Remove member gateway-1']")
    c.page.wait_for_url("**/console/groups/payments?done=updated")
    g = keygate.api("GET", "/api/v1/groups/payments", keygate.admin_key).json()
    assert [m["principal"] for m in g["members"]] == ["gateway-2"]
    c.go("/console/groups")
    c.shot("groups")
    c.page.click("a[aria-label='Delete group payments']")
    c.page.click("button:has-text('Delete the group')")
    c.page.wait_for_url("**/console/groups?done=deleted")
    assert keygate.api("GET", "/api/v1/groups/payments", keygate.admin_key).status_code == 404


def test_custom_roles_are_created_edited_and_deleted(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/roles")
    c.page.click("text=Add a custom role")
    c.page.fill("input[name=name]", "auditor")
    c.page.fill("input[name=description]", "reads the audit log")
    c.page.check("#new-audit-read")
    c.page.check("#new-keys-read")
    c.page.click("form.stack button:has-text('Add')")
    c.page.wait_for_url("**/console/roles?done=updated")
    c.shot("roles")
    role = keygate.api("GET", "/api/v1/roles/auditor", keygate.admin_key).json()
    assert role["permissions"] == ["keys:read", "audit:read"]
    c.page.click("a[aria-label='Edit role auditor']")
    c.check_csp()
    c.page.uncheck("#edit-keys-read")
    c.page.click("button:has-text('Save')")
    c.page.wait_for_url("**/console/roles?done=updated")
    role = keygate.api("GET", "/api/v1/roles/auditor", keygate.admin_key).json()
    assert role["permissions"] == ["audit:read"]
    c.page.click("a[aria-label='Delete role auditor']")
    c.page.click("button:has-text('Delete the role')")
    c.page.wait_for_url("**/console/roles?done=deleted")
    assert keygate.api("GET", "/api/v1/roles/auditor", keygate.admin_key).status_code == 404


def test_a_manager_ends_the_session_of_a_user_they_manage(keygate, console):
    keygate.user("sam", "read-only")
    r = keygate.api("POST", "/api/v1/auth/token",
                    data={"grant_type": "password", "username": "sam", "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    bearer = {"Authorization": "Bearer " + token}
    assert keygate.api("GET", "/api/v1/auth/sessions", headers=bearer).status_code == 200
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/sessions?q=sam")
    assert "those of the users you manage" in c.page.content()
    c.shot("sessions-managed")
    c.page.click("button[aria-label$=' of sam']")
    c.page.wait_for_url("**/console/sessions?done=ended")
    c.check_csp()
    assert keygate.api("GET", "/api/v1/auth/sessions", headers=bearer).status_code == 401


def test_a_ca_profile_is_added_from_an_uploaded_pem_file_and_deleted(keygate, console, tmp_path):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Console Partners CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    ca_file = tmp_path / "partners-ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/tls")
    c.page.click("text=Add a CA profile")
    c.page.fill("input[name=name]", "partners")
    c.page.set_input_files("input[name=ca_file]", str(ca_file))
    c.page.select_option("select[name=revocation_check]", "none")
    c.page.select_option("select[name=principal_match]", "cn")
    c.page.click("form.stack button:has-text('Add')")
    c.page.wait_for_url("**/console/tls?done=updated")
    c.check_csp()
    assert "partners" in c.page.content() and "1 certificates (PEM)" in c.page.content()
    c.shot("tls-ca-profiles")
    c.page.click("a[aria-label='Delete CA profile partners']")
    c.page.click("button:has-text('Delete the CA profile')")
    c.page.wait_for_url("**/console/tls?done=deleted")
    names = [p["name"] for p in keygate.api("GET", "/api/v1/ca-profiles", keygate.admin_key).json()]
    assert "partners" not in names


def test_key_file_download_signs_an_assertion_the_api_accepts(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/key-files")
    assert "0 of 10" in c.page.content()
    c.shot("key-files")
    c.page.select_option("select[name=role]", "admin")
    c.page.fill("input[name=description]", "ci key file")
    with c.page.expect_download() as dl:
        c.page.click("button:has-text('Save and Download')")
    doc = json.loads(open(dl.value.path()).read())
    assert doc["accessKey"].startswith("-----BEGIN PRIVATE KEY-----")
    now = int(time.time())
    assertion = jwt.encode({"iss": doc["accessID"], "sub": doc["accessID"],
                            "aud": doc["adminRestApiUrl"], "iat": now, "exp": now + 300,
                            "jti": str(uuid.uuid4())}, doc["accessKey"], algorithm="ES256")
    r = requests.get(keygate.url("/api/v1/key-files"), verify=keygate.cert,
                     headers={"Authorization": "Bearer " + assertion}, timeout=30)
    assert r.status_code == 200, r.text
    c.go("/console/key-files")
    assert "1 of 10" in c.page.content()


def test_a_rotation_needs_two_approvers_voting_in_their_own_browsers(keygate, browser, console):
    keygate.user("alice", "admin")
    keygate.user("bob", "admin")
    requester = console()
    requester.sign_in_with_key(keygate.admin_key)
    requester.go("/console/keys")
    requester.shot("signing-keys")
    requester.page.click("button[aria-label='Rotate ring jwt-default']")
    requester.page.wait_for_url("**/console/keys?done=requested")
    requester.go("/console/approvals")
    assert "Your request" in requester.page.content()
    before = [v for v in keygate.api("GET", "/api/v1/keys", keygate.admin_key).json()
              if v["ring"] == "jwt-default"]
    for name in ("alice", "bob"):
        voter = console()
        voter.sign_in(name)
        voter.go("/console/approvals")
        if name == "alice":
            voter.shot("approvals")
        voter.page.click("button[aria-label^='Approve request']")
        voter.page.wait_for_url("**/console/approvals?done=voted")
        voter.check_csp()
    after = [v for v in keygate.api("GET", "/api/v1/keys", keygate.admin_key).json()
             if v["ring"] == "jwt-default"]
    assert len(after) == len(before) + 1, "the rotation did not run after two approvals"


def test_a_user_created_in_the_console_signs_in_read_only_and_cannot_write(keygate, console):
    admin = console()
    admin.sign_in_with_key(keygate.admin_key)
    admin.go("/console/users")
    admin.page.click("text=Add a user")
    admin.page.fill("input[name=username]", "rita")
    admin.page.fill("input[name=password]", PASSWORD)
    admin.page.select_option("select[name=role]", "read-only")
    admin.page.click("form.stack button:has-text('Add')")
    admin.page.wait_for_url("**/console/users?done=updated")
    admin.shot("users")
    rita = console()
    rita.sign_in("rita")
    rita.go("/console/api-keys")
    html = rita.page.content()
    assert "Add an API key" not in html and "Regenerate" not in html and "Delete" not in html
    rita.shot("read-only-api-keys")
    for path, control in (("/console/groups", "Add a group"), ("/console/roles", "Add a custom role"),
                          ("/console/tls", "Add a CA profile"), ("/console/oauth-servers", "Add an OAuth server")):
        rita.go(path)
        assert control not in rita.page.content(), path
        assert "Delete" not in rita.page.inner_text("main"), path
    token = rita.page.get_attribute("input[name=_csrf]", "value")
    # A forged POST from her own session, with her own CSRF token and origin: refused.
    r = rita.ctx.request.post(keygate.url("/console/api-keys"),
                              form={"_csrf": token, "name": "forged", "role": "read-only"},
                              headers={"Origin": keygate.base}, max_redirects=0)
    assert r.status == 403
    names = [k["name"] for k in keygate.api("GET", "/api/v1/api-keys", keygate.admin_key).json()]
    assert "forged" not in names


def test_the_audit_page_shows_the_actions_just_taken(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    r = keygate.api("POST", "/api/v1/api-keys", keygate.admin_key,
                    json={"name": "audited", "role": "read-only"})
    assert r.status_code == 201
    c.go("/console/audit")
    html = c.page.content()
    assert "console.sign-in.break-glass" in html
    assert "api-key.create" in html
    c.page.click("text=Verify the chain and its checkpoints")
    assert "Chain verified" in c.page.content()
    c.check_csp()
    c.shot("audit")
    c.page.fill("input[name=action]", "api-key.create")
    c.page.click("button:has-text('Filter')")
    assert "console.sign-in" not in c.page.inner_text("tbody")
    with c.page.expect_download() as dl:
        c.page.click("text=Export these entries as JSONL")
    lines = [json.loads(l) for l in open(dl.value.path()).read().splitlines()]
    assert lines and all(e["action"] == "api-key.create" for e in lines)


def test_sign_out_ends_the_session_and_the_cookie_no_longer_works(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/sessions")
    c.shot("sessions")
    cookie = c.cookie()["value"]
    c.page.click("button:has-text('Sign out')")
    c.page.wait_for_url("**/console/sign-in")
    c.shot("sign-in")
    r = requests.get(keygate.url("/console/api-keys"), verify=keygate.cert, allow_redirects=False,
                     cookies={"__Host-keygate_console": cookie}, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"


def test_the_session_cookie_has_the_required_attributes(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    ck = c.cookie()
    assert ck["httpOnly"] and ck["secure"] and ck["sameSite"] == "Strict"
    assert ck["path"] == "/" and not ck["domain"].startswith(".")
    # Not readable by page script.
    assert "keygate_console" not in c.page.evaluate("document.cookie")


def test_the_api_refuses_the_console_cookie_and_the_console_refuses_bearer_tokens(keygate, console):
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    cookie = {"__Host-keygate_console": c.cookie()["value"]}
    r = requests.get(keygate.url("/api/v1/api-keys"), cookies=cookie, verify=keygate.cert, timeout=30)
    assert r.status_code == 401
    r = requests.get(keygate.url("/console/api-keys"), verify=keygate.cert, allow_redirects=False,
                     headers={"Authorization": "Bearer " + keygate.admin_key}, timeout=30)
    assert r.status_code == 400
    assert "bootstrap" not in r.text


def test_a_cross_origin_form_post_is_refused(keygate, console):
    target = keygate.url("/console/api-keys")
    attack = ("<!doctype html><form id=f method=post action='%s'>"
              "<input name=name value=evil><input name=role value=super-admin>"
              "<input name=_csrf value=guess></form>"
              "<script>document.getElementById('f').submit()</script>" % target).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(attack)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = console()
        c.sign_in_with_key(keygate.admin_key)
        c.page.goto("http://127.0.0.1:%d/" % srv.server_port)
        c.page.wait_for_load_state("networkidle")
        names = [k["name"] for k in keygate.api("GET", "/api/v1/api-keys", keygate.admin_key).json()]
        assert "evil" not in names
        # The console session itself is untouched.
        c.go("/console/api-keys")
        assert "API Keys" in c.page.content()
    finally:
        srv.shutdown()


def test_stored_xss_payloads_are_inert(keygate, console):
    payload = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    r = keygate.api("POST", "/api/v1/api-keys", keygate.admin_key,
                    json={"name": "x" + payload, "description": payload, "role": "read-only"})
    assert r.status_code == 201
    c = console()
    c.sign_in_with_key(keygate.admin_key)
    c.go("/console/api-keys?q=" + requests.utils.quote(payload))
    assert payload in c.page.inner_text("tbody"), "the payload is shown as text"
    c.go("/console/audit?target=" + requests.utils.quote(payload))
    c.page.wait_for_timeout(300)
    assert c.dialogs == []


def test_every_page_has_no_csp_violation_and_works_at_390px(keygate, console):
    pages = ["/console/sign-in"]
    c = console()
    c.go("/console/sign-in")
    c.sign_in_with_key(keygate.admin_key)
    for p in ["/console/api-keys", "/console/oauth-servers", "/console/key-files", "/console/keys", "/console/approvals",
              "/console/audit", "/console/users", "/console/groups", "/console/roles", "/console/sessions",
              "/console/tls"]:
        c.go(p)
        if p == "/console/tls":
            assert "mTLS mode" in c.page.content()
            c.shot("tls")
        assert c.page.locator("h1").count() == 1
        pages.append(p)
    phone = console(width=390, height=844)
    phone.sign_in_with_key(keygate.admin_key)
    phone.go("/console/api-keys")
    # Nothing wider than the screen but the scrollable tables.
    overflow = phone.page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert overflow, "the page scrolls sideways at 390 px"
    phone.shot("api-keys-390px")
