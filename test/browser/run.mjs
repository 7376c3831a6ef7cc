// Runs the browser tests with node's own test runner when what they need is
// here: Chromium (Debian's package, /usr/bin/chromium or LB_CHROMIUM) and
// playwright-core in test/browser/node_modules (`npm ci` in this folder;
// `deps/install.sh --test` does both). Otherwise it names what is missing and
// exits 77, which ctest reports as skipped; under CI (CI set and not "false")
// a skip is a failure, so it exits 1.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const chromium = process.env.LB_CHROMIUM || "/usr/bin/chromium";
const missing = [];
if (!fs.existsSync(chromium)) missing.push(`${chromium} (apt-get install chromium)`);
if (!fs.existsSync(path.join(here, "node_modules", "playwright-core", "package.json")))
  missing.push("playwright-core (npm ci in test/browser)");
if (missing.length) {
  const ci = process.env.CI && process.env.CI !== "false";
  console.log(`browser tests ${ci ? "failed" : "skipped"}: missing ` + missing.join(", "));
  process.exit(ci ? 1 : 77);
}
const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", path.join(here, "pages.test.mjs")],
                    { stdio: "inherit", cwd: here });
process.exit(r.status === null ? 1 : r.status);
