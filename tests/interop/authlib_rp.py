#!/usr/bin/env python3
"""A third-party relying party for sekisho's built-in OpenID provider, written with authlib.

    authlib_rp.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD

Runs the authorization code flow with PKCE (S256) the way a web application would: discovery,
the authorization request, the provider's sign-in form posted like a browser does, the code
exchange (client_secret_basic), ID-token validation against the published JWKS (signature, iss,
aud, exp, nonce, at_hash), userinfo, a refresh (the token must rotate) and the reuse of the old
refresh token (which must be refused). Prints one JSON line; exits 1 on any failure.
"""
import html
import json
import re
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken


def main():
    issuer, client_id, secret, redirect_uri, username, password = sys.argv[1:7]
    meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == issuer, meta["issuer"]
    assert "S256" in meta["code_challenge_methods_supported"]

    client = OAuth2Session(
        client_id,
        secret,
        scope="openid email profile groups",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], nonce=nonce, code_verifier=verifier
    )

    # The user's browser: open the sign-in page, post the form.
    browser = requests.Session()
    page = browser.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    interaction = html.unescape(re.search(r'name="interaction" value="([^"]+)"', page.text).group(1))
    posted = browser.post(
        urljoin(url, action),
        data={"interaction": interaction, "username": username, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    assert posted.status_code == 303, (posted.status_code, posted.text[:500])
    callback = posted.headers["Location"]
    assert callback.startswith(redirect_uri), callback
    assert parse_qs(urlparse(callback).query)["iss"] == [issuer]

    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(
        token["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
        },
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate()
    assert claims["nonce"] == nonce

    userinfo = client.get(meta["userinfo_endpoint"], timeout=10).json()
    assert userinfo["sub"] == claims["sub"], userinfo

    old = token["refresh_token"]
    fresh = client.refresh_token(meta["token_endpoint"], refresh_token=old)
    refreshed_claims = jwt.decode(
        fresh["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": issuer}, "aud": {"essential": True, "value": client_id}},
        claims_params={"client_id": client_id, "access_token": fresh["access_token"]},
    )
    refreshed_claims.validate()
    reused = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old},
        auth=(client_id, secret),
        timeout=10,
    )
    print(
        json.dumps(
            {
                "id_token": dict(claims),
                "userinfo": userinfo,
                "refreshed": fresh["refresh_token"] != old and refreshed_claims["sub"] == claims["sub"],
                "reused_refresh_error": reused.json().get("error"),
            }
        )
    )


if __name__ == "__main__":
    main()
