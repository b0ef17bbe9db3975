// Drives the console in headless Chromium as a person would, against the running agent that
// tests/e2e/console.rs started (it keeps devices talking, and makes events, meanwhile).
// Checks what a person would see; waits for each change with a generous deadline and asserts
// the change, not its timing. Exits non-zero, saying what was not seen, on any failure.
//
// Environment: CONSOLE_URL, READ_TOKEN, WRITE_TOKEN, SCREENSHOT (a .png path),
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const { CONSOLE_URL, READ_TOKEN, WRITE_TOKEN, SCREENSHOT } = process.env;
const DEADLINE = 30_000;
const steps = [];

async function step(name, f) {
  try {
    await f();
    steps.push(name);
  } catch (e) {
    throw new Error(`${name}: ${e.message}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = null;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && !/ (401|403|409) /.test(m.text())) errors.push(m.text()); });
  // Anything the page loads from elsewhere would fail offline: note every request's origin.
  const origins = new Set();
  page.on("request", (r) => origins.add(new URL(r.url()).origin));

  await step("the page loads without a token and asks for one", async () => {
    await page.goto(CONSOLE_URL);
    await page.locator("#live", { hasText: "need a token" }).waitFor({ timeout: DEADLINE });
  });
  await step("the read token shows the devices, live", async () => {
    await page.fill("#token", READ_TOKEN);
    await page.press("#token", "Enter");
    await page.locator("#live.on").waitFor({ timeout: DEADLINE });
    await page.locator('#devices li[data-key="t-1"]').waitFor({ timeout: DEADLINE });
  });
  await step("a device that stops publishing turns missing without a reload", async () => {
    await page.locator('#devices li[data-key="t-2"][data-state="missing"]').waitFor({ timeout: DEADLINE });
    const text = await page.locator('#devices li[data-key="t-2"]').innerText();
    if (!/✕\s*missing/.test(text)) throw new Error(`the tile says "${text}": the state must be shown in words too`);
  });
  await step("a broken rule shows its file:line:col in the rules table", async () => {
    const error = page.locator('#rules tr[data-rule="hot"][data-status="error"] td.error');
    await error.waitFor({ timeout: DEADLINE });
    const text = await error.innerText();
    if (!/hot\.rhai:\d+:\d+/.test(text)) throw new Error(`the error says "${text}"`);
  });
  await step("a new event appears in the feed and opens as its CloudEvent", async () => {
    const fresh = page.locator("#feed li.new").first();
    await fresh.waitFor({ timeout: DEADLINE });
    await fresh.locator("button").click();
    const detail = await page.locator("#event-detail").innerText();
    if (!detail.includes('"specversion": "1.0"')) throw new Error(`the detail is ${detail.slice(0, 200)}`);
  });
  const ackButton = page.locator('#alarms tr[data-rule="hot"][data-key="t-1"] button.ack');
  await step("acknowledging with the read token is refused", async () => {
    await ackButton.waitFor({ timeout: DEADLINE });
    await ackButton.click();
    await page.locator("#message", { hasText: "Refused" }).waitFor({ timeout: DEADLINE });
    const state = await page.locator('#alarms tr[data-rule="hot"][data-key="t-1"] .alarm-state').innerText();
    if (state !== "unacknowledged") throw new Error(`the alarm is "${state}"`);
  });
  await step("acknowledging with the write token changes the alarm's state", async () => {
    await page.fill("#token", WRITE_TOKEN);
    await page.press("#token", "Enter");
    await ackButton.click();
    await page.locator('#alarms tr[data-rule="hot"][data-key="t-1"] .alarm-state', { hasText: /^acknowledged$/ })
      .waitFor({ timeout: DEADLINE });
  });
  await step("the backtest panel sends the candidate and shows the agent's answer", async () => {
    await page.fill("#backtest-rules", 'rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > 75.0 });');
    await page.click("#backtest-form button[type=submit]");
    // This agent runs inside the test program, not as `edgewatch run --config`: it says so.
    await page.locator("#message", { hasText: "--config" }).waitFor({ timeout: DEADLINE });
  });
  await step("the keyboard reaches the devices", async () => {
    await page.locator("#device-filter").focus();
    for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.closest("#devices") !== null);
    if (!focused) throw new Error("Tab from the filter does not reach a device tile");
  });
  await step("the overview screenshot", async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: SCREENSHOT, fullPage: false });
  });
  await step("a device page draws a chart with points", async () => {
    await page.click('#devices li[data-key="t-1"] a');
    const points = page.locator('figure.chart[data-field="temperature"] circle.pt');
    await points.first().waitFor({ timeout: DEADLINE });
    if ((await points.count()) < 1) throw new Error("no point");
    await page.locator("#device-state", { hasText: "up" }).waitFor({ timeout: DEADLINE });
  });
  await step("on a phone's width nothing runs off the side", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(CONSOLE_URL + "#/");
    await page.fill("#token", READ_TOKEN);
    await page.press("#token", "Enter");
    await page.locator('#devices li[data-key="t-1"]').waitFor({ timeout: DEADLINE });
    const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (over > 1) throw new Error(`the page is ${over}px wider than the screen`);
  });
  const foreign = [...origins].filter((o) => o !== new URL(CONSOLE_URL).origin);
  if (foreign.length) throw new Error(`requests left the gateway: ${foreign.join(", ")}`);
  if (errors.length) throw new Error(`the page logged errors: ${errors.join(" | ")}`);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
console.log(JSON.stringify({ passed: steps, failed: failed ? failed.message : null }));
process.exit(failed ? 1 : 0);
