#!/usr/bin/env node
// A real OpenID provider (panva's oidc-provider) for sekisho's end-to-end tests.
//
//   node tests/node/idp.mjs CONFIG_JSON_PATH
//
// Prints exactly one JSON line on stdout when ready, e.g.
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// (plus "https_issuer"/"https_port" when the config has "tls"), then serves until
// SIGTERM/SIGINT. Everything else goes to stderr. See README.md in this directory.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

// oidc-provider prints notices with console.info (stdout): stdout is reserved for the
// single "ready" line, so route every console method to stderr before loading it.
for (const method of ['log', 'info', 'debug', 'warn']) {
  console[method] = (...args) => console.error(...args);
}
const { default: Provider, errors: oidcErrors } = await import('oidc-provider');
const { SignJWT } = await import('jose');

const log = (...args) => console.error('[idp]', ...args);

// ---------------------------------------------------------------------------------------
// configuration

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node idp.mjs CONFIG_JSON_PATH');
  process.exit(2);
}
const cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const claimsInIdToken = cfg.claims_in_id_token !== false;
const accessTokenTtl = cfg.access_token_ttl ?? 3600;
const idTokenTtl = cfg.id_token_ttl ?? 3600;
const refreshTokenTtl = cfg.refresh_token_ttl ?? 86400;
const rotateRefreshTokens = cfg.rotate_refresh_token === true;
const LONG_TTL = 14 * 24 * 3600;

const clients = (cfg.clients || []).map((client) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  ...client,
}));

// ---------------------------------------------------------------------------------------
// static users

const USERS = {
  alice: {
    password: 'alice-pw',
    claims: {
      sub: 'alice', email: 'alice@example.com', email_verified: true, name: 'Alice Admin', groups: ['eng', 'admins'],
    },
  },
  // carol's provider sends an address with no email_verified claim at all.
  carol: {
    password: 'carol-pw',
    claims: {
      sub: 'carol', email: 'carol@example.com', name: 'Carol Ops', groups: ['ops'],
    },
  },
  bob: {
    password: 'bob-pw',
    claims: {
      sub: 'bob', email: 'bob@example.com', email_verified: false, name: 'Bob Sales', groups: ['sales'],
    },
  },
};

async function findAccount(_ctx, sub) {
  const user = USERS[sub];
  if (!user) return undefined;
  return {
    accountId: sub,
    async claims() {
      return structuredClone(user.claims);
    },
  };
}

// ---------------------------------------------------------------------------------------
// keys: RSA-2048 (RS256), P-256 (ES256), Ed25519 (EdDSA); rotation puts new keys first

const ALGS = ['RS256', 'ES256', 'EdDSA'];
let keyGeneration = 0;
let publishedKeys = []; // private JWKs, newest first
let signingKeys = {}; // alg -> { kid, key: KeyObject }

function generateKeys() {
  keyGeneration += 1;
  const tag = `${keyGeneration}-${crypto.randomBytes(4).toString('hex')}`;
  // Node 20 can deadlock when the garbage collector frees a key-generation job while a
  // KeyObject sharing that job's key is being exported (both take the key's mutex): the IdP then
  // hangs before its ready line. So the job encodes the keys itself and no KeyObject shares them.
  const make = (type, options, alg) => {
    const { privateKey: jwk } = crypto.generateKeyPairSync(type, {
      ...options,
      publicKeyEncoding: { type: 'spki', format: 'der' },
      privateKeyEncoding: { format: 'jwk' },
    });
    return {
      jwk: {
        ...jwk, kid: `${alg}-${tag}`, alg, use: 'sig',
      },
      key: crypto.createPrivateKey({ key: jwk, format: 'jwk' }),
    };
  };
  const fresh = [
    make('rsa', { modulusLength: 2048 }, 'RS256'),
    make('ec', { namedCurve: 'P-256' }, 'ES256'),
    make('ed25519', {}, 'EdDSA'),
  ];
  publishedKeys = [...fresh.map((k) => k.jwk), ...publishedKeys];
  signingKeys = Object.fromEntries(fresh.map((k) => [k.jwk.alg, { kid: k.jwk.kid, key: k.key }]));
}

// ---------------------------------------------------------------------------------------
// storage: one plain Map shared by every Provider instance (no LRU eviction)

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set of store keys
const uidIndex = new Map(); // `${model}:${uid}` -> id
const userCodeIndex = new Map(); // `${model}:${userCode}` -> id

function storeDelete(key) {
  const entry = store.get(key);
  if (!entry) return;
  store.delete(key);
  const { payload } = entry;
  const model = key.slice(0, key.indexOf(':'));
  if (payload.grantId) grantIndex.get(payload.grantId)?.delete(key);
  if (payload.uid) uidIndex.delete(`${model}:${payload.uid}`);
  if (payload.userCode) userCodeIndex.delete(`${model}:${payload.userCode}`);
}

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    storeDelete(key);
    return undefined;
  }
  return entry;
}

setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) storeDelete(key);
  }
}, 30_000).unref();

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storeDelete(key);
    store.set(key, {
      payload: structuredClone(payload),
      expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
    });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
    if (payload.uid) uidIndex.set(`${this.model}:${payload.uid}`, id);
    if (payload.userCode) userCodeIndex.set(`${this.model}:${payload.userCode}`, id);
  }

  async find(id) {
    const entry = storeGet(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const id = uidIndex.get(`${this.model}:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodeIndex.get(`${this.model}:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = storeGet(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    storeDelete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const keys = grantIndex.get(grantId);
    if (!keys) return;
    for (const key of [...keys]) storeDelete(key);
    grantIndex.delete(grantId);
  }
}

// ---------------------------------------------------------------------------------------
// HTML (no external resources, no CSP)

const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const page = (title, body, head = '') => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title>${head}</head>
<body>
${body}
</body></html>`;

function loginPage(uid, details, error) {
  const { params } = details;
  return page('Sign in', `<h1>Sign in</h1>
<p>Client: <span id="client">${esc(params.client_id)}</span>; scope: <span id="scope">${esc(params.scope)}</span></p>
${error ? `<p id="error" style="color:red">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label>Login <input id="login" name="login" type="text" value="${esc(params.login_hint || '')}" autofocus></label><br>
  <label>Password <input id="password" name="password" type="password"></label><br>
  <button id="submit" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button id="abort" type="submit">Cancel</button></form>`);
}

async function logoutSource(ctx, form) {
  // Auto-submit the confirmation form with logout=yes (end the whole IdP session).
  const withLogout = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
  ctx.type = 'html';
  ctx.body = page('Signing out', `<h1>Signing out</h1>
${withLogout}
<noscript><button id="logout" type="submit" form="op.logoutForm">Sign out</button></noscript>
<script>document.forms[0].submit()</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1>Signed out</h1><p>You have been signed out.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1>Error</h1>
${Object.entries(out).map(([k, v]) => `<pre>${esc(k)}: ${esc(v)}</pre>`).join('\n')}`);
}

// ---------------------------------------------------------------------------------------
// provider instances (one per listener: http, and https if configured). They share the
// storage, the cookie keys and the keystore; /test/rotate-keys rebuilds them.

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    clients: structuredClone(clients),
    jwks: { keys: structuredClone(publishedKeys) },
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: !claimsInIdToken,
    cookies: { keys: cookieKeys },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      backchannelLogout: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    enabledJWA: {
      idTokenSigningAlgValues: ALGS,
      userinfoSigningAlgValues: ALGS,
      introspectionSigningAlgValues: ALGS,
      authorizationSigningAlgValues: ALGS,
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => rotateRefreshTokens,
    ttl: {
      AccessToken: accessTokenTtl,
      IdToken: idTokenTtl,
      RefreshToken: refreshTokenTtl,
      AuthorizationCode: 600,
      Interaction: 3600,
      Grant: Math.max(LONG_TTL, refreshTokenTtl),
      Session: Math.max(LONG_TTL, refreshTokenTtl),
    },
    clientBasedCORS: () => true,
    renderError,
    // back-channel logout to loopback RPs: skip the special-use IP (SSRF) guard
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
  });
  provider.on('server_error', (_ctx, err) => log('server_error', err));
  provider.on('grant.error', (_ctx, err) => log('grant.error', err.message, err.error_description || ''));
  provider.on('end_session.success', () => log('end_session.success'));
  const callback = provider.callback();
  return { provider, callback, issuer };
}

// ---------------------------------------------------------------------------------------
// helpers for the raw node handlers

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

const sendJson = (res, status, obj) => send(res, status, `${JSON.stringify(obj)}\n`, 'application/json');

// ---------------------------------------------------------------------------------------
// interactions: login form + auto-consent

async function grantAll(provider, details, accountId, missing) {
  const { params } = details;
  let grant;
  if (details.grantId && details.session?.accountId === accountId) {
    grant = await provider.Grant.find(details.grantId);
  }
  grant ||= new provider.Grant({ accountId, clientId: params.client_id });
  if (missing) {
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
  } else {
    if (params.scope) grant.addOIDCScope(params.scope);
    if (params.claims) {
      try {
        const requested = JSON.parse(params.claims);
        const names = new Set();
        for (const section of ['id_token', 'userinfo']) {
          for (const name of Object.keys(requested[section] || {})) names.add(name);
        }
        if (names.size) grant.addOIDCClaims([...names]);
      } catch { /* ignore malformed claims parameter */ }
    }
  }
  return grant.save();
}

async function handleInteraction(req, res, instance, uid, action) {
  const { provider } = instance;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    if (err instanceof oidcErrors.SessionNotFound) {
      return send(res, 400, page('Error', `<h1>Error</h1><pre>error: ${esc(err.message)}</pre><pre>error_description: ${esc(err.error_description)}</pre>`));
    }
    throw err;
  }
  if (details.uid !== uid) {
    return send(res, 400, page('Error', '<h1>Error</h1><pre>error: interaction mismatch</pre>'));
  }
  const { prompt } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid, details));
    if (prompt.name === 'consent') {
      const grantId = await grantAll(provider, details, details.session.accountId, prompt.details);
      log(`auto-consent ${details.session.accountId} -> ${details.params.client_id}`);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, page('Error', `<h1>Error</h1><pre>error: unsupported prompt ${esc(prompt.name)}</pre>`));
  }

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login') || '';
    const password = form.get('password') || '';
    const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
    if (!user || user.password !== password) {
      log(`login failed for ${JSON.stringify(login)}`);
      return send(res, 401, loginPage(uid, details, 'Invalid login or password.'));
    }
    if (prompt.name !== 'login') {
      return send(res, 400, page('Error', '<h1>Error</h1><pre>error: no login pending</pre>'));
    }
    // Log in and pre-consent to everything the client asked for, in one step.
    const grantId = await grantAll(provider, details, login);
    log(`login ok ${login} -> ${details.params.client_id}`);
    return provider.interactionFinished(req, res, {
      login: { accountId: login },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && action === 'abort') {
    await readBody(req);
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 405, page('Error', '<h1>Error</h1><pre>error: method not allowed</pre>'));
}

// ---------------------------------------------------------------------------------------
// test hooks (/test/...)

function revokeForSub(sub, destroySessions) {
  const grantIds = new Set();
  let refreshTokens = 0;
  let sessions = 0;
  for (const [key, entry] of store) {
    const model = key.slice(0, key.indexOf(':'));
    const { payload } = entry;
    if (model === 'RefreshToken' && payload.accountId === sub) {
      refreshTokens += 1;
      if (payload.grantId) grantIds.add(payload.grantId);
      storeDelete(key);
    } else if (model === 'Grant' && payload.accountId === sub) {
      grantIds.add(payload.jti || key.slice(key.indexOf(':') + 1));
    } else if (model === 'Session' && payload.accountId === sub && destroySessions) {
      sessions += 1;
      storeDelete(key);
    }
  }
  for (const grantId of grantIds) {
    for (const key of [...(grantIndex.get(grantId) || [])]) storeDelete(key);
    grantIndex.delete(grantId);
    storeDelete(`Grant:${grantId}`);
  }
  return { revoked_grants: grantIds.size, revoked_refresh_tokens: refreshTokens, destroyed_sessions: sessions };
}

async function mintToken(instance, query) {
  const sub = query.get('sub') || 'alice';
  const alg = query.get('alg') || 'RS256';
  const auds = query.getAll('aud');
  const ttl = Number(query.get('ttl') ?? 300);
  const signer = signingKeys[alg];
  if (!signer) throw Object.assign(new Error(`unsupported alg ${alg} (use one of ${ALGS.join(', ')})`), { status: 400 });
  if (!Number.isFinite(ttl)) throw Object.assign(new Error('ttl must be a number'), { status: 400 });
  const now = Math.floor(Date.now() / 1000);
  const exp = now + Math.trunc(ttl);
  const user = USERS[sub];
  const claims = user ? {
    email: user.claims.email,
    email_verified: user.claims.email_verified,
    name: user.claims.name,
    groups: user.claims.groups,
  } : {};
  // An access token (RFC 9068 `at+jwt`) unless the test asks for another `typ` (e.g. `JWT` to
  // forge an ID-token-shaped token); `sid` and `nonce` add those claims.
  const typ = query.get('typ') || 'at+jwt';
  if (query.get('sid')) claims.sid = query.get('sid');
  if (query.get('nonce')) claims.nonce = query.get('nonce');
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg, kid: signer.kid, typ })
    .setIssuer(query.get('iss') || instance.issuer)
    .setSubject(sub)
    .setIssuedAt(exp <= now ? exp - 60 : now)
    .setExpirationTime(exp);
  if (auds.length) jwt.setAudience(auds.length === 1 ? auds[0] : auds);
  return { token: await jwt.sign(signer.key), kid: signer.kid, exp };
}

// Signs arbitrary claims with the current key of `alg` (back-channel logout tokens made by
// hand): `header` is merged over {alg, kid, typ: 'logout+jwt'}; the claims are taken as given
// (nothing added: no iat, no exp unless the test sets them).
async function signClaims(body) {
  const { alg = 'ES256', header = {}, claims = {} } = body;
  const signer = signingKeys[alg];
  if (!signer) throw Object.assign(new Error(`unsupported alg ${alg} (use one of ${ALGS.join(', ')})`), { status: 400 });
  const token = await new SignJWT(claims)
    .setProtectedHeader({ typ: 'logout+jwt', kid: signer.kid, ...header, alg })
    .sign(signer.key);
  return { token, kid: signer.kid };
}

async function handleTest(req, res, instance, path, query) {
  const body = await readBody(req);
  if (path === '/test/clients' && req.method === 'POST') {
    // Registers (or replaces) a client at run time: the proxy under test binds port 0, so its
    // redirect URIs are only known after the IdP has started.
    let client;
    try {
      client = JSON.parse(body);
    } catch (err) {
      return sendJson(res, 400, { error: `invalid JSON: ${err.message}` });
    }
    if (!client || typeof client.client_id !== 'string') return sendJson(res, 400, { error: 'client_id is required' });
    const entry = { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], ...client };
    const previous = clients.findIndex((c) => c.client_id === entry.client_id);
    if (previous >= 0) clients.splice(previous, 1, entry);
    else clients.push(entry);
    rebuildProviders();
    try {
      if (!await instances.http.provider.Client.find(entry.client_id)) throw new Error('not found');
    } catch (err) {
      clients.splice(clients.indexOf(entry), 1);
      rebuildProviders();
      return sendJson(res, 400, { error: `invalid client: ${err.message} ${err.error_description || ''}` });
    }
    log(`registered client ${entry.client_id}`);
    return sendJson(res, 200, { client_id: entry.client_id });
  }
  if (path === '/test/revoke-refresh' && req.method === 'POST') {
    const sub = query.get('sub');
    if (!sub) return sendJson(res, 400, { error: 'sub is required' });
    const result = revokeForSub(sub, ['1', 'true', 'yes'].includes(query.get('sessions')));
    log(`revoke-refresh ${sub}: ${JSON.stringify(result)}`);
    return sendJson(res, 200, result);
  }
  if (path === '/test/rotate-keys' && req.method === 'POST') {
    generateKeys();
    rebuildProviders();
    const kids = Object.fromEntries(Object.entries(signingKeys).map(([alg, { kid }]) => [alg, kid]));
    log(`rotated keys: ${JSON.stringify(kids)}`);
    return sendJson(res, 200, { kids });
  }
  if (path === '/test/groups' && req.method === 'POST') {
    // Changes a user's groups at the provider: the next ID token (a refresh) carries them.
    const user = USERS[query.get('sub')];
    if (!user) return sendJson(res, 400, { error: 'unknown sub' });
    user.claims.groups = (query.get('groups') || '').split(',').filter(Boolean);
    log(`groups of ${query.get('sub')}: ${user.claims.groups.join(',')}`);
    return sendJson(res, 200, { groups: user.claims.groups });
  }
  if (path === '/test/stats' && (req.method === 'POST' || req.method === 'GET')) {
    return sendJson(res, 200, { token_requests: tokenRequests });
  }
  if (path === '/test/sign' && req.method === 'POST') {
    try {
      return sendJson(res, 200, await signClaims(JSON.parse(body || '{}')));
    } catch (err) {
      return sendJson(res, err.status || 400, { error: err.message });
    }
  }
  if (path === '/test/token' && (req.method === 'POST' || req.method === 'GET')) {
    try {
      return sendJson(res, 200, await mintToken(instance, query));
    } catch (err) {
      return sendJson(res, err.status || 500, { error: err.message });
    }
  }
  return sendJson(res, 404, { error: 'unknown test hook' });
}

// ---------------------------------------------------------------------------------------
// servers

const instances = {}; // 'http' | 'https' -> { provider, callback, issuer }
let tokenRequests = 0; // POST /token on any listener (code exchanges and refreshes)
const issuers = {};

function rebuildProviders() {
  for (const scheme of Object.keys(issuers)) instances[scheme] = buildProvider(issuers[scheme]);
}

function handlerFor(scheme) {
  return async (req, res) => {
    const instance = instances[scheme];
    const url = new URL(req.url, 'http://x');
    const { pathname } = url;
    try {
      const m = pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?$/);
      if (m) {
        await handleInteraction(req, res, instance, m[1], m[2]);
        return;
      }
      if (pathname === '/token' && req.method === 'POST') tokenRequests += 1;
      if (pathname.startsWith('/test/')) {
        await handleTest(req, res, instance, pathname, url.searchParams);
        return;
      }
      instance.callback(req, res);
    } catch (err) {
      log(`error handling ${req.method} ${req.url}:`, err);
      if (!res.headersSent) send(res, 500, page('Error', `<h1>Error</h1><pre>error: ${esc(err.message)}</pre>`));
      else res.end();
    }
  };
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

const started = Date.now();
generateKeys();

const servers = [];
const httpServer = http.createServer(handlerFor('http'));
servers.push(httpServer);
const httpPort = await listen(httpServer, cfg.port ?? 0);
issuers.http = `http://127.0.0.1:${httpPort}`;
const ready = { issuer: issuers.http, port: httpPort };

if (cfg.tls) {
  const httpsServer = https.createServer({
    cert: fs.readFileSync(cfg.tls.cert),
    key: fs.readFileSync(cfg.tls.key),
  }, handlerFor('https'));
  servers.push(httpsServer);
  const httpsPort = await listen(httpsServer, cfg.tls.port ?? 0);
  issuers.https = `https://127.0.0.1:${httpsPort}`;
  ready.https_issuer = issuers.https;
  ready.https_port = httpsPort;
}

rebuildProviders();

// static clients are only validated when first used: check them now and fail fast
for (const client of clients) {
  try {
    if (!await instances.http.provider.Client.find(String(client.client_id))) throw new Error('not found');
  } catch (err) {
    log(`invalid client ${JSON.stringify(client.client_id)}: ${err.message} ${err.error_description || ''}`);
    process.exit(1);
  }
}

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: shutting down`);
  let open = servers.length;
  for (const server of servers) {
    server.close(() => {
      open -= 1;
      if (open === 0) process.exit(0);
    });
    server.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

log(`ready in ${Date.now() - started} ms: ${JSON.stringify(ready)}; clients: ${clients.map((c) => c.client_id).join(', ')}`);
process.stdout.write(`${JSON.stringify(ready)}\n`);
