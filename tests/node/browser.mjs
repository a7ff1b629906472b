#!/usr/bin/env node
// Headless Chromium driver for sekisho's browser login tests.
//
//   node tests/node/browser.mjs SCRIPT_JSON_PATH
//
// The script is a JSON list of steps, or an object {"steps": [...], "host_resolver_rules": "...",
// "timeout_ms": 15000}. Prints one JSON object on stdout at the end and exits 0 (all steps
// passed) or 1 (a step failed); 2 on a usage / launch error. See README.md in this directory.

import * as fs from 'node:fs';

// stdout carries exactly one JSON object: send any library chatter to stderr
for (const method of ['log', 'info', 'debug', 'warn']) {
  console[method] = (...args) => console.error(...args);
}
const { chromium } = await import('playwright-core');

const DEFAULT_TIMEOUT_MS = 15_000;

function finish(code, result) {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
}

const scriptPath = process.argv[2];
if (!scriptPath) {
  console.error('usage: node browser.mjs SCRIPT_JSON_PATH');
  process.exit(2);
}

let script;
try {
  script = JSON.parse(fs.readFileSync(scriptPath, 'utf8'));
} catch (err) {
  finish(2, { ok: false, step: null, error: `cannot read script: ${err.message}` });
  await new Promise(() => {});
}
const steps = Array.isArray(script) ? script : script.steps;
const options = Array.isArray(script) ? {} : script;
if (!Array.isArray(steps)) {
  finish(2, { ok: false, step: null, error: 'script must be a list of steps or {"steps": [...]}' });
  await new Promise(() => {});
}
const defaultTimeout = options.timeout_ms ?? DEFAULT_TIMEOUT_MS;

const args = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
if (options.host_resolver_rules) args.push(`--host-resolver-rules=${options.host_resolver_rules}`);

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: 60_000,
  });
} catch (err) {
  finish(2, { ok: false, step: null, error: `cannot launch chromium: ${err.message}` });
  await new Promise(() => {});
}

const context = await browser.newContext({ ignoreHTTPSErrors: true });
const page = await context.newPage();
page.on('dialog', (dialog) => dialog.dismiss().catch(() => {}));

// status of the main frame's latest navigation response (a redirect chain ends with the
// final response, which arrives last)
let lastStatus = null;
page.on('response', (response) => {
  try {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
      lastStatus = response.status();
    }
  } catch { /* frame detached */ }
});

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function bodyText() {
  for (let i = 0; i < 3; i += 1) {
    try {
      return await page.evaluate(() => (document.body ? document.body.innerText : document.documentElement?.innerText || ''));
    } catch {
      // navigation in progress: the execution context went away
      await sleep(100);
    }
  }
  return '';
}

async function settle(timeout) {
  await page.waitForLoadState('load', { timeout }).catch(() => {});
}

// Poll check() until it returns true or the deadline passes.
async function poll(timeout, check) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      if (await check()) return true;
    } catch { /* retry */ }
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
}

async function runStep(step, timeout) {
  if ('goto' in step) {
    const response = await page.goto(step.goto, { timeout, waitUntil: 'load' });
    if (response) lastStatus = response.status();
    return;
  }
  if ('fill' in step) {
    await page.fill(step.fill, String(step.value ?? ''), { timeout });
    return;
  }
  if ('select' in step) {
    await page.selectOption(step.select, String(step.value ?? ''), { timeout });
    return;
  }
  if ('click' in step) {
    await page.click(step.click, { timeout });
    return;
  }
  if ('wait_url' in step) {
    const re = new RegExp(step.wait_url);
    await page.waitForURL(re, { timeout, waitUntil: 'load' });
    return;
  }
  if ('expect_text' in step) {
    const wanted = String(step.expect_text);
    await settle(timeout);
    if (!await poll(timeout, async () => (await bodyText()).includes(wanted))) {
      throw new Error(`page text does not contain ${JSON.stringify(wanted)}`);
    }
    return;
  }
  if ('expect_status' in step) {
    const wanted = Number(step.expect_status);
    await settle(timeout);
    if (!await poll(timeout, async () => lastStatus === wanted)) {
      throw new Error(`last navigation status is ${lastStatus}, expected ${wanted}`);
    }
    return;
  }
  if ('dump' in step) {
    await settle(timeout);
    dumps[step.dump] = { url: page.url(), status: lastStatus, body: await bodyText() };
    return;
  }
  if ('cookies' in step) {
    dumps[step.cookies] = { url: page.url(), cookies: await context.cookies() };
    return;
  }
  if ('sleep' in step) {
    await sleep(Number(step.sleep));
    return;
  }
  throw new Error(`unknown step ${JSON.stringify(step)}`);
}

const dumps = {};
let exitCode = 0;
let result;
for (let i = 0; i < steps.length; i += 1) {
  const step = steps[i];
  const timeout = step.timeout_ms ?? defaultTimeout;
  try {
    await runStep(step, timeout);
  } catch (err) {
    const body = await bodyText().catch(() => '');
    result = {
      ok: false,
      step: i,
      error: String(err?.message || err).split('\n').slice(0, 6).join('\n'),
      url: page.url(),
      status: lastStatus,
      body: body.slice(0, 2000),
      dumps,
    };
    exitCode = 1;
    break;
  }
}
result ||= { ok: true, dumps, url: page.url() };

await browser.close().catch(() => {});
finish(exitCode, result);
