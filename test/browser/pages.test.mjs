// The hosted connect page and the operator console in headless Chromium
// (Debian's chromium, driven by playwright-core), against the real
// leverbridge binary and the project's Lever simulator (lever-sim). Each step
// saves a screenshot under LB_SCREENSHOT_DIR (default
// <build>/browser-screenshots). Run through run.mjs (ctest: "browser").
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BUILD = process.env.LB_BUILD_DIR || path.join(ROOT, "build");
const BIN = process.env.LB_BIN || path.join(BUILD, "leverbridge");
const SIM = path.join(BUILD, "test", "sim", "lever-sim");
const SHOTS = process.env.LB_SCREENSHOT_DIR || path.join(BUILD, "browser-screenshots");
const CHROMIUM = process.env.LB_CHROMIUM || "/usr/bin/chromium";
const ADMIN = "browser-admin-token-0123456789abcdef";
const WAIT = 15000; // ms, for anything the page shows after polling

// ---- processes -------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function track(proc, name) {
  proc.exitPromise = new Promise((resolve) => proc.once("exit", (code, sig) => resolve({ code, sig })));
  proc.name = name;
  return proc;
}

async function stop(proc, ms = 15000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc && proc.exitPromise;
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
  const r = await proc.exitPromise;
  clearTimeout(timer);
  return r;
}

/* lever-sim on an ephemeral port: its first stdout line is {"port":N}. */
function startSim(tmp) {
  const err = fs.openSync(path.join(tmp, "lever-sim.log"), "w");
  const proc = track(spawn(SIM, ["--listen", "127.0.0.1:0", "--rate", "0"],
                           { stdio: ["ignore", "pipe", err] }), "lever-sim");
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("lever-sim did not start")), 10000);
    proc.stdout.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0 && !proc.port) {
        clearTimeout(timer);
        proc.port = JSON.parse(buf.slice(0, nl)).port;
        proc.base = `http://127.0.0.1:${proc.port}`;
        resolve(proc);
      }
    });
    proc.once("exit", () => reject(new Error("lever-sim exited at start")));
  });
}

async function startServer(tmp, simBase, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("LEVERBRIDGE_")) env[k] = v;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    Object.assign(env, {
      LEVERBRIDGE_LISTEN: `127.0.0.1:${port}`,
      LEVERBRIDGE_DATA_DIR: path.join(tmp, "data"),
      LEVERBRIDGE_ADMIN_TOKEN: ADMIN,
      LEVERBRIDGE_LEVER_API_URL: `${simBase}/v1`,
      LEVERBRIDGE_PROVISION_RETRY_BASE: "50ms",
      LEVERBRIDGE_PROVISION_RETRY_CAP: "200ms",
      LEVERBRIDGE_RETRY_BASE: "100ms",
      LEVERBRIDGE_RETRY_CAP: "500ms",
      LEVERBRIDGE_LOG_LEVEL: "warn",
    }, extra);
    const err = fs.openSync(path.join(tmp, `leverbridge.${attempt}.log`), "w");
    const proc = track(spawn(BIN, [], { env, stdio: ["ignore", "ignore", err], cwd: tmp }), "leverbridge");
    proc.base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && proc.exitCode === null) {
      try {
        const r = await fetch(proc.base + "/healthz");
        if (r.status === 200) return proc;
      } catch { /* not yet */ }
      await sleep(50);
    }
    await stop(proc);
  }
  throw new Error("leverbridge did not start; see " + tmp);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function http(base, method, p, body, token) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: r.status, headers: r.headers, json, text };
}

// ---- the run -------------------------------------------------------------------

const S = {}; // sim, server, browser, context, page, tokens, problems

async function shot(name, page = S.page) {
  const file = path.join(SHOTS, name + ".png");
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

function tokenOf(url) {
  return url.slice(url.lastIndexOf("/") + 1);
}

async function link(tenant, expiresIn) {
  const r = await http(S.server.base, "POST", `/v1/tenants/${tenant}/connect-links`,
                       expiresIn ? { expires_in: expiresIn } : undefined, ADMIN);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

function sim(method, p, body) {
  return http(S.sim.base, method, p, body);
}

describe("connect page and console", { timeout: 120000 }, () => {
  before(async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    for (const f of fs.readdirSync(SHOTS)) if (f.endsWith(".png")) fs.unlinkSync(path.join(SHOTS, f));
    S.tmp = fs.mkdtempSync(path.join(os.tmpdir(), "lb-browser-"));
    S.sim = await startSim(S.tmp);
    const seeded = await sim("POST", "/_sim/seed", {
      stages: [{ id: "st-applied", text: "Applied" }, { id: "st-phone", text: "Phone screen" },
               { id: "st-onsite", text: "On-site" }],
      postings: [{ id: "po-js", text: "Senior JavaScript Engineer", state: "published" },
                 { id: "po-go", text: "Go Engineer", state: "published" }],
      opportunities: [{ id: "opp-ada", name: "Ada Lovelace", email: "ada@example.com",
                        stage: "st-applied", posting: "po-js" }],
      keys: [{ key: "key-good" },
             { key: "key-partial", permissions: "all", except: ["find all postings"] },
             { key: "key-postings", kind: "postings" }],
    });
    assert.equal(seeded.status, 201, seeded.text);
    S.server = await startServer(S.tmp, S.sim.base);
    for (const [id, name] of [["acme", "Acme"], ["beta", "Beta"]]) {
      const r = await http(S.server.base, "PUT", "/v1/tenants/" + id, { name, api_addon: true }, ADMIN);
      assert.equal(r.status, 201, r.text);
    }
    S.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Playwright gives each launch a new, empty --user-data-dir.
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    S.context = await S.browser.newContext({ viewport: { width: 1100, height: 900 } });
    S.context.setDefaultTimeout(WAIT);
    S.problems = [];
    S.context.on("page", (p) => watch(p));
    S.page = await S.context.newPage();
  });

  after(async () => {
    if (S.browser) await S.browser.close();
    const r = await stop(S.server);
    await stop(S.sim);
    if (r) assert.deepEqual(r, { code: 0, sig: null }, "leverbridge exit after SIGTERM");
  });

  /* Errors in the page, CSP violations and requests to other hosts fail the run. */
  function watch(p) {
    p.on("console", (m) => {
      if (m.type() === "error" && !/status of (400|401|403|404|409|422|502)/.test(m.text()))
        S.problems.push("console: " + m.text());
    });
    p.on("pageerror", (e) => S.problems.push("pageerror: " + e.message));
    p.on("request", (req) => {
      const u = new URL(req.url());
      if (u.protocol !== "data:" && u.host !== new URL(S.server.base).host)
        S.problems.push("request to another host: " + req.url());
    });
  }

  test("a connect link opens the page with a strict CSP", async () => {
    S.linkA = await link("acme", "1h");
    S.tokenA = tokenOf(S.linkA.url);
    assert.match(S.linkA.url, new RegExp(`^${S.server.base}/connect/acme\\.\\d+\\.[A-Za-z0-9_-]{43}$`));
    const res = await S.page.goto(S.linkA.url);
    assert.equal(res.status(), 200);
    const h = res.headers();
    assert.match(h["content-type"], /^text\/html/);
    assert.equal(h["cache-control"], "no-store");
    assert.equal(h["content-security-policy"],
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
      "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    assert.equal(h["referrer-policy"], "no-referrer");
    await S.page.locator("#conn-summary .badge", { hasText: "Not connected" }).waitFor();
    await S.page.locator("#tenant-name", { hasText: "For Acme" }).waitFor();
    // Versioned assets are cached for good.
    const css = await S.page.evaluate(() => document.querySelector("link[rel=stylesheet]").href);
    const a = await http(S.server.base, "GET", new URL(css).pathname + new URL(css).search);
    assert.equal(a.status, 200);
    assert.match(a.headers.get("content-type"), /^text\/css/);
    assert.match(a.headers.get("cache-control"), /immutable/);
    await shot("01-connect-page");
  });

  test("a key lacking a permission is refused and the permission named", async () => {
    const p = S.page;
    // By keyboard: Tab to the key field, type, Enter.
    let found = false;
    for (let i = 0; i < 15 && !found; i++) {
      await p.keyboard.press("Tab");
      found = await p.evaluate(() => document.activeElement && document.activeElement.id === "api-key");
    }
    assert.ok(found, "the API key field is reachable with Tab");
    await p.keyboard.type("key-partial");
    await p.keyboard.press("Enter");
    const item = p.locator("#key-result ul.missing li", { hasText: "find all postings" });
    await item.waitFor();
    assert.equal(await p.locator("#key-result ul.missing li").count(), 1);
    await p.locator("#key-result", { hasText: "missing 1 permission" }).waitFor();
    await shot("02-missing-permission");

    await p.fill("#api-key", "key-postings");
    await p.click("#key-submit");
    await p.locator("#key-result", { hasText: "not a Postings API key" }).waitFor();
    await shot("03-postings-key");

    const c = await http(S.server.base, "GET", "/v1/tenants/acme/lever", undefined, ADMIN);
    assert.equal(c.json.status, "disconnected");
  });

  test("a good key connects and the hook turns active", async () => {
    const p = S.page;
    await p.fill("#api-key", "key-good");
    await p.click("#key-submit");
    await p.locator("#conn-note", { hasText: "Lever is connected." }).waitFor();
    assert.equal(await p.evaluate(() => document.activeElement.id), "status-h");
    await p.locator("#hook-summary .badge", { hasText: "Active" }).waitFor();
    await p.locator("#hook-hint", { hasText: "Candidate state change" }).waitFor({ state: "visible" });
    assert.equal(await p.locator("#connect").isHidden(), true);
    await p.locator("#workflows").waitFor({ state: "visible" });
    await shot("04-hook-active");
  });

  test("a workflow is created with the stage and posting pickers", async () => {
    const p = S.page;
    await p.click("#wf-new");
    await p.fill("#wf-name", "Tag phone screens");
    // The pickers hold Lever's stages and postings by name.
    await p.locator("#wf-to-stage option", { hasText: "Phone screen" }).waitFor({ state: "attached" });
    await p.selectOption("#wf-to-stage", { label: "Phone screen" });
    await p.selectOption("#wf-from-stage", { label: "Applied" });
    await p.getByLabel("Senior JavaScript Engineer").check();
    const type = p.locator("#wf-actions select").first();
    await type.selectOption({ label: "Add tags" });
    await p.getByLabel("Tags (comma separated)").fill("assessment:sent, js");
    await shot("05-workflow-form");
    await p.click("#wf-save");
    const card = p.locator("li.wf", { hasText: "Tag phone screens" });
    await card.waitFor();
    await card.getByText("A candidate moves to Phone screen from Applied (postings: Senior JavaScript Engineer)").waitFor();
    const list = await http(S.server.base, "GET", "/v1/tenants/acme/workflows", undefined, ADMIN);
    assert.equal(list.json.data.length, 1);
    const wf = list.json.data[0];
    assert.deepEqual(wf.trigger, { event: "stage_changed", to_stage: "st-phone", from_stage: "st-applied",
                                   postings: ["po-js"] });
    assert.deepEqual(wf.actions, [{ type: "add_tags", tags: ["assessment:sent", "js"] }]);
    // Disable, then enable again.
    await card.getByRole("button", { name: "Disable Tag phone screens" }).click();
    await card.locator(".badge", { hasText: "Disabled" }).waitFor();
    await card.getByRole("button", { name: "Enable Tag phone screens" }).click();
    await card.locator(".badge", { hasText: "Enabled" }).waitFor();
    await shot("06-workflow-listed");
  });

  test("a stage change fired in Lever appears in events; a failed job is retried", async () => {
    const p = S.page;
    // The key loses a write permission: the add_tags job fails (403) and is listed.
    let r = await sim("POST", "/_sim/keys", { key: "key-good", permissions: "all", except: ["add opportunity tags"] });
    assert.equal(r.status, 201, r.text);
    r = await sim("POST", "/_sim/deliver", { event: "candidateStageChange",
      data: { opportunityId: "opp-ada", candidateId: "opp-ada", toStageId: "st-phone", fromStageId: "st-applied" } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.delivered, 1, r.text);
    const row = p.locator("#events tbody tr", { hasText: "Stage change" });
    await row.waitFor();
    await row.locator(".badge", { hasText: "accepted" }).waitFor();
    await row.locator("td", { hasText: "opp-ada" }).waitFor();
    await p.locator("#hook-hint").waitFor({ state: "hidden" });
    await p.locator("#hook-summary", { hasText: "Last event from Lever" }).waitFor();
    await shot("07-event-received");

    const job = p.locator("#jobs tbody tr", { hasText: "Add tags" });
    await job.waitFor();
    await p.locator("#conn-summary li", { hasText: "add opportunity tags" }).waitFor();
    await shot("08-failed-job");
    r = await sim("POST", "/_sim/keys", { key: "key-good", permissions: "all" });
    assert.equal(r.status, 201, r.text);
    await job.getByRole("button", { name: /^Retry/ }).click();
    await p.locator("#jobs", { hasText: "No failed jobs." }).waitFor();
    const deadline = Date.now() + WAIT;
    let tags = [];
    while (Date.now() < deadline) {
      const s = await sim("GET", "/_sim/state?opportunity=opp-ada");
      tags = (s.json.opportunities[0] || {}).tags || [];
      if (tags.includes("assessment:sent")) break;
      await sleep(100);
    }
    assert.ok(tags.includes("assessment:sent") && tags.includes("js"), JSON.stringify(tags));
    await shot("09-job-retried");
  });

  test("a delayed trigger, a guarded move and a dry run for one candidate", async () => {
    const p = S.page;
    await p.click("#wf-new");
    await p.fill("#wf-name", "Advance after a while");
    await p.selectOption("#wf-to-stage", { label: "Phone screen" });
    await p.getByLabel("Wait before acting").fill("30m");
    const type = p.locator("#wf-actions select").first();
    await type.selectOption({ label: "Move to a stage" });
    const act = p.locator("#wf-actions li.action").first();
    await act.getByLabel("Stage", { exact: true }).selectOption({ label: "On-site" });
    await act.getByLabel("Move only if the candidate is still").selectOption({ label: "Only from these stages" });
    await act.locator("fieldset.only-from").getByLabel("Phone screen").check();
    await shot("10-delay-and-guard");
    await p.click("#wf-save");
    const card = p.locator("li.wf", { hasText: "Advance after a while" });
    await card.waitFor();
    await card.getByText("A candidate moves to Phone screen, after 30m").waitFor();
    await card.getByText("Move to On-site (only from Phone screen)").waitFor();
    const list = await http(S.server.base, "GET", "/v1/tenants/acme/workflows", undefined, ADMIN);
    const wf = list.json.data.find((w) => w.name === "Advance after a while");
    assert.deepEqual(wf.trigger, { event: "stage_changed", to_stage: "st-phone", delay: "30m" });
    assert.deepEqual(wf.actions, [{ type: "move_stage", stage: "st-onsite", only_from: ["st-phone"] }]);
    // A bad delay is refused by the server and the field is focused.
    await card.getByRole("button", { name: "Edit Advance after a while" }).click();
    await p.locator("#wf-delay").fill("9d");
    await p.click("#wf-save");
    await p.locator("#wf-error", { hasText: "trigger.delay" }).waitFor();
    assert.equal(await p.evaluate(() => document.activeElement.id), "wf-delay");
    await p.click("#wf-cancel");

    // The dry run: the candidate is not in Phone screen, then it is.
    const before = (await sim("GET", "/_sim/requests?since=0&limit=1")).json.last_seq;
    const events = (await http(S.server.base, "GET", "/v1/tenants/acme/events", undefined, ADMIN)).json.data.length;
    await card.getByLabel("Try on one candidate").fill("opp-ada");
    await card.getByRole("button", { name: "Dry run Advance after a while" }).click();
    await card.locator(".dry-match", { hasText: "Does not match: the candidate is not in the trigger's stage" }).waitFor();
    await card.locator(".dry-actions li[data-outcome=would_skip]", { hasText: "Move to On-site" }).waitFor();
    let r = await sim("POST", "/_sim/opportunities/opp-ada", { stage: "st-phone" });
    assert.equal(r.status, 200, r.text);
    await card.getByRole("button", { name: "Dry run Advance after a while" }).click();
    await card.locator(".dry-match", { hasText: "Matches: the candidate is in the trigger's stage" }).waitFor();
    await card.locator(".dry-actions li[data-outcome=would_run]", { hasText: "moves the candidate" }).waitFor();
    await shot("11-dry-run");
    // It only read: two GETs of the opportunity, no event.
    r = await sim("GET", `/_sim/requests?since=${before}&limit=100`);
    assert.deepEqual(r.json.data.map((e) => `${e.method} ${e.path}`),
                     ["GET /v1/opportunities/opp-ada", "GET /v1/opportunities/opp-ada"]);
    const after = (await http(S.server.base, "GET", "/v1/tenants/acme/events", undefined, ADMIN)).json.data.length;
    assert.equal(after, events);
    // An unknown candidate: Lever's 404 in words.
    await card.getByLabel("Try on one candidate").fill("opp-nobody");
    await card.getByRole("button", { name: "Dry run Advance after a while" }).click();
    await card.locator(".dry-result", { hasText: "no opportunity" }).waitFor();
  });

  test("an expired link shows the 403 page, and the API answers 401", async () => {
    const l = await link("acme", "1s");
    await sleep(1200);
    const page = await S.context.newPage();
    const res = await page.goto(l.url);
    assert.equal(res.status(), 403);
    await page.locator("h2", { hasText: "This link has expired or is not valid" }).waitFor();
    await shot("10-expired-link", page);
    await page.close();
    const r = await http(S.server.base, "GET", "/v1/tenants/acme/lever", undefined, tokenOf(l.url));
    assert.equal(r.status, 401);
    const bad = await fetch(S.server.base + "/connect/acme.99999999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert.equal(bad.status, 403);
  });

  test("a link for tenant A cannot read tenant B", async () => {
    const p = S.page;
    const results = await p.evaluate(async (token) => {
      const out = {};
      const h = { Authorization: "Bearer " + token };
      for (const [name, method, url] of [["own", "GET", "/v1/tenants/acme/lever"],
                                         ["other", "GET", "/v1/tenants/beta/lever"],
                                         ["other_workflows", "GET", "/v1/tenants/beta/workflows"],
                                         ["delete_tenant", "DELETE", "/v1/tenants/acme"],
                                         ["new_link", "POST", "/v1/tenants/acme/connect-links"],
                                         ["list_tenants", "GET", "/v1/tenants"]]) {
        const r = await fetch(url, { method, headers: h });
        const b = await r.json();
        out[name] = { status: r.status, code: b.error ? b.error.code : null };
      }
      return out;
    }, S.tokenA);
    assert.deepEqual(results, {
      own: { status: 200, code: null },
      other: { status: 403, code: "forbidden" },
      other_workflows: { status: 403, code: "forbidden" },
      delete_tenant: { status: 403, code: "forbidden" },
      new_link: { status: 403, code: "forbidden" },
      list_tenants: { status: 401, code: "unauthorized" },
    });
    // Show what the API said on the page, for the screenshot.
    await p.evaluate((r) => {
      const box = document.createElement("div");
      box.className = "alert error";
      box.id = "cross-tenant";
      box.textContent = "Test: with tenant acme's link, GET /v1/tenants/beta/lever answered " +
        r.other.status + " " + r.other.code + "; DELETE /v1/tenants/acme answered " +
        r.delete_tenant.status + " " + r.delete_tenant.code + ".";
      document.getElementById("main").prepend(box);
      window.scrollTo(0, 0);
    }, results);
    await shot("11-cross-tenant-forbidden");
    await p.evaluate(() => document.getElementById("cross-tenant").remove());
  });

  test("usable at phone width", async () => {
    const page = await S.context.newPage();
    await page.setViewportSize({ width: 375, height: 812 });
    await page.goto(S.linkA.url);
    await page.locator("#events tbody tr").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, "no sideways scrolling at 375 px (overflow " + overflow + " px)");
    await shot("12-phone-width", page);
    await page.close();
  });

  test("the console asks for the admin token once per session", async () => {
    const page = await S.context.newPage();
    const res = await page.goto(S.server.base + "/console");
    assert.equal(res.status(), 200);
    assert.match(res.headers()["content-security-policy"], /default-src 'none'/);
    await page.fill("#admin-token", "wrong-token");
    await page.press("#admin-token", "Enter");
    await page.locator("#signin-result", { hasText: "not the admin token" }).waitFor();
    await page.fill("#admin-token", ADMIN);
    await page.press("#admin-token", "Enter");
    const acme = page.locator("#tenants tbody tr", { hasText: "Acme" });
    await acme.waitFor();
    await acme.locator(".badge", { hasText: "Connected" }).waitFor();
    await acme.locator(".badge", { hasText: "Active" }).waitFor();
    await acme.locator("td", { hasText: "0 queued, 0 retrying" }).waitFor();
    await page.locator("#tenants tbody tr", { hasText: "Beta" }).locator(".badge", { hasText: "Not connected" }).waitFor();
    await shot("13-console", page);
    // Same session: no second prompt.
    await page.reload();
    await page.locator("#tenants tbody tr", { hasText: "Acme" }).waitFor();
    assert.equal(await page.locator("#signin").isHidden(), true);
    // A connect link from the console.
    await page.locator("#tenants tbody tr", { hasText: "Beta" }).getByRole("button", { name: /connect link/i }).click();
    await page.getByRole("button", { name: "Make the link" }).click();
    const url = await page.locator("#link-url").inputValue();
    assert.match(url, /\/connect\/beta\.\d+\./);
    await shot("14-console-link", page);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.locator("#signin").waitFor({ state: "visible" });
    await page.close();
  });

  test("the console lists the replicas and the one holding each tenant", async () => {
    const cl = await http(S.server.base, "GET", "/v1/cluster", undefined, ADMIN);
    assert.equal(cl.status, 200, cl.text);
    const node = cl.json.node;
    const page = await S.context.newPage();
    await page.goto(S.server.base + "/console");
    if (await page.locator("#signin").isVisible()) {
      await page.fill("#admin-token", ADMIN);
      await page.press("#admin-token", "Enter");
    }
    const row = page.locator("#nodes tbody tr", { hasText: node });
    await row.waitFor();
    assert.equal(await page.locator("#nodes tbody tr").count(), 1);
    await row.locator("td", { hasText: "(this one)" }).waitFor();
    assert.equal(await row.locator("td[data-label=Leases]").innerText(), String(cl.json.nodes[0].leases));
    await page.locator("#nodes-sum", { hasText: "One server (SQLite)" }).waitFor();
    const acme = page.locator("#tenants tbody tr", { hasText: "Acme" });
    assert.equal(await acme.locator(".holder").innerText(), node);
    await shot("13b-console-replicas", page);
    await page.close();
  });

  test("the console charts the last 24 hours, in total and per tenant", async () => {
    // One more delivery and its copy, so the hour has accepted and duplicate.
    const d = { event: "candidateStageChange", token: "chart".padEnd(48, "c"), count: 2, same: true,
                data: { opportunityId: "opp-ada", candidateId: "opp-ada", toStageId: "st-onsite",
                        fromStageId: "st-phone" } };
    let r = await sim("POST", "/_sim/deliver", d);
    assert.equal(r.status, 200, r.text);
    const total = (await http(S.server.base, "GET", "/v1/stats", undefined, ADMIN)).json;
    const acme = (await http(S.server.base, "GET", "/v1/tenants/acme/stats", undefined, ADMIN)).json;
    const sum = (st, g, k) => st.buckets.reduce((a, b) => a + b[g][k], 0);
    assert.ok(sum(total, "deliveries", "accepted") >= 2 && sum(total, "deliveries", "duplicate") >= 1,
              JSON.stringify(total.buckets.slice(-1)));
    const page = await S.context.newPage();
    await page.goto(S.server.base + "/console");
    await page.fill("#admin-token", ADMIN);
    await page.press("#admin-token", "Enter");
    // The total: two charts of 24 bars, each hour's numbers in its <title>.
    const fig = page.locator("#trend svg.chart[data-group=deliveries]");
    await fig.waitFor();
    assert.equal(await page.locator("#trend svg.chart").count(), 2);
    assert.equal(await fig.locator("g.bar").count(), 24);
    for (const k of ["accepted", "duplicate", "refused"]) {
      const shown = await page.locator(`#trend figure:first-child [data-kind=${k}][data-total]`).getAttribute("data-total");
      assert.equal(Number(shown), sum(total, "deliveries", k), k);
    }
    const last = await fig.locator("g.bar").last().locator("title").textContent();
    const now = total.buckets[23].deliveries;
    assert.match(last, new RegExp(`${now.accepted} accepted, ${now.duplicate} duplicate, ${now.refused} refused`));
    assert.ok(await fig.locator("rect.seg-accepted").count() >= 1);
    const jobs = page.locator("#trend svg.chart[data-group=jobs]");
    assert.equal(Number(await page.locator("#trend figure:last-child [data-kind=succeeded][data-total]").getAttribute("data-total")),
                 sum(total, "jobs", "succeeded"));
    assert.equal(await jobs.locator("g.bar").count(), 24);
    await shot("15-console-trend", page);
    // One tenant's chart, from its row.
    await page.locator("#tenants tbody tr", { hasText: "Acme" }).getByRole("button", { name: /last 24 hours/i }).click();
    const mine = page.locator("#detail-body svg.chart[data-group=deliveries]");
    await mine.waitFor();
    assert.equal(Number(await page.locator("#detail-body figure:first-child [data-kind=accepted][data-total]").getAttribute("data-total")),
                 sum(acme, "deliveries", "accepted"));
    await shot("16-console-tenant-trend", page);
    await page.close();
  });

  test("a change only reconciliation found: both pages say Lever is not delivering", async () => {
    const p = S.page;
    assert.equal(await p.locator("#missed-warning").count(), 0);
    let r = await sim("POST", "/_sim/config", { deliveries_enabled: false });
    assert.equal(r.status, 200, r.text);
    r = await sim("POST", "/_sim/opportunities", { id: "opp-bob", name: "Bob", email: "bob@example.com",
                                                   stage: "st-applied", posting: "po-js" });
    assert.equal(r.status, 201, r.text);
    r = await http(S.sim.base, "PUT", "/v1/opportunities/opp-bob/stage", { stage: "st-phone" });
    assert.equal(r.status, 401); // the Data API needs the key
    const put = await fetch(S.sim.base + "/v1/opportunities/opp-bob/stage", {
      method: "PUT", body: JSON.stringify({ stage: "st-phone" }),
      headers: { "Content-Type": "application/json",
                 Authorization: "Basic " + Buffer.from("key-good:").toString("base64") } });
    assert.equal(put.status, 200);
    r = await http(S.server.base, "POST", "/v1/tenants/acme/lever/reconcile", undefined, ADMIN);
    assert.equal(r.status, 202, r.text);
    const warn = p.locator("#missed-warning", { hasText: "Candidate state change" });
    await warn.waitFor({ state: "visible" });
    await p.locator("#missed-warning", { hasText: "1 stage change of the last 7 days" }).waitFor();
    await shot("17-missed-warning");
    const page = await S.context.newPage();
    await page.goto(S.server.base + "/console");
    await page.fill("#admin-token", ADMIN);
    await page.press("#admin-token", "Enter");
    const acme = page.locator("#tenants tbody tr", { hasText: "Acme" });
    await acme.locator(".missed", { hasText: "Lever is not delivering: 1 missed" }).waitFor();
    assert.equal(await page.locator("#tenants tbody tr", { hasText: "Beta" }).locator(".missed").count(), 0);
    await shot("18-console-missed", page);
    await page.close();
  });

  test("a backfill applies a workflow to the candidates waiting in its stage, with a progress bar and cancel", async () => {
    const p = S.page;
    // Waiting in Phone screen besides opp-ada and opp-bob: two of the workflow's posting,
    // one archived, one of another posting.
    for (const o of [{ id: "opp-cy", posting: "po-js" }, { id: "opp-dee", posting: "po-js" },
                     { id: "opp-eve", posting: "po-js", archived: true }, { id: "opp-fay", posting: "po-go" }]) {
      const r = await sim("POST", "/_sim/opportunities", Object.assign({ name: o.id, email: o.id + "@example.com",
                                                                       stage: "st-phone" }, o));
      assert.equal(r.status, 201, r.text);
    }
    const card = p.locator("li.wf", { hasText: "Tag phone screens" });
    await card.getByRole("button", { name: "Backfill Tag phone screens" }).click();
    const box = card.locator(".backfill");
    await box.locator(".badge", { hasText: "Backfill done" }).waitFor();
    await box.locator(".bf-counts", { hasText: "4 listed, 4 queued, 0 skipped" }).waitFor();
    assert.equal(await box.locator("progress.bf-progress").evaluate((n) => n.value), 1);
    assert.equal(await box.locator(".bf-queued").evaluate((n) => n.style.width), "100%");
    assert.equal(await box.getByRole("button", { name: "Cancel backfill" }).count(), 0);
    await shot("19-backfill-done");
    const deadline = Date.now() + WAIT;
    let tags = [];
    while (Date.now() < deadline) {
      const s = await sim("GET", "/_sim/state?opportunity=opp-cy");
      tags = (s.json.opportunities[0] || {}).tags || [];
      if (tags.includes("js")) break;
      await sleep(100);
    }
    assert.ok(tags.includes("assessment:sent"), JSON.stringify(tags));
    const eve = await sim("GET", "/_sim/state?opportunity=opp-eve");
    assert.deepEqual(eve.json.opportunities[0].tags || [], []);

    // Lever's list hangs: the bar runs, and Cancel stops the backfill.
    let r = await sim("POST", "/_sim/faults", { path_prefix: "/v1/opportunities", method: "GET",
                                                delay_ms: 3000, count: 1 });
    assert.equal(r.status, 201, r.text);
    await card.getByRole("button", { name: "Backfill Tag phone screens" }).click();
    await box.locator(".badge", { hasText: "Backfill running" }).waitFor();
    assert.equal(await box.locator("progress.bf-progress").evaluate((n) => n.hasAttribute("value")), false);
    await shot("20-backfill-running");
    await box.getByRole("button", { name: "Cancel backfill" }).click();
    await box.locator(".badge", { hasText: "Backfill cancelled" }).waitFor();
    await box.locator(".bf-counts", { hasText: "0 listed, 0 queued, 0 skipped" }).waitFor();
    await shot("21-backfill-cancelled");
    r = await sim("DELETE", "/_sim/faults");
    assert.equal(r.status, 204, r.text);
  });

  test("no page error, CSP violation or request to another host", () => {
    assert.deepEqual(S.problems, []);
  });
});

describe("a PUBLIC_URL that a real Lever cannot reach", { timeout: 60000 }, () => {
  const W = {};
  before(async () => {
    W.tmp = fs.mkdtempSync(path.join(os.tmpdir(), "lb-browser-warn-"));
    // Lever's sandbox host, never called: the tenant stays disconnected.
    W.server = await startServer(W.tmp, "unused", { LEVERBRIDGE_LEVER_API_URL: "https://api.sandbox.lever.co/v1" });
    const r = await http(W.server.base, "PUT", "/v1/tenants/acme", { name: "Acme", api_addon: true }, ADMIN);
    assert.equal(r.status, 201, r.text);
    W.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"] });
    W.page = await W.browser.newPage();
    W.page.setDefaultTimeout(WAIT);
  });

  after(async () => {
    if (W.browser) await W.browser.close();
    const r = await stop(W.server);
    if (r) assert.deepEqual(r, { code: 0, sig: null }, "leverbridge exit after SIGTERM");
  });

  test("the connect page says webhooks will not arrive", async () => {
    const l = await http(W.server.base, "POST", "/v1/tenants/acme/connect-links", { expires_in: "1h" }, ADMIN);
    assert.equal(l.status, 201, l.text);
    const res = await W.page.goto(l.json.url);
    assert.equal(res.status(), 200);
    const box = W.page.locator("#hook-summary .alert.warn", { hasText: "Lever cannot reach this server" });
    await box.waitFor();
    assert.match(await box.innerText(), /LEVERBRIDGE_PUBLIC_URL is http:\/\/127\.0\.0\.1:\d+, a loopback address/);
    await shot("15-connect-public-url-warning", W.page);
  });
});
