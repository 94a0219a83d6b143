// The web page in a real Chromium, driven by playwright-core: what a user does and sees, step by step.
//
//   BASE_URL=http://127.0.0.1:8000 LIMITED_URL=http://127.0.0.1:8001 CHROMIUM=/usr/bin/chromium \
//   SCREENSHOT_DIR=.artifacts/browser node web/tests/browser.mjs
//
// BASE_URL: a runtime on `fake:echo?delay_ms=80` (the reply echoes the prompt word by word) with generous limits;
// LIMITED_URL: one with a low GPT_RATE_LIMIT_FREE, for step 6 (default BASE_URL); EXPECT_VOICE=1 when BASE_URL
// has the voice endpoints (step 8 then uses them, else it checks the page offers no voice). Exit status 0 when every step
// passed; each step leaves a screenshot in SCREENSHOT_DIR. Any uncaught page error or CSP violation fails the run.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = requireEnv("BASE_URL");
const LIMITED = process.env.LIMITED_URL || BASE;
const SHOTS = process.env.SCREENSHOT_DIR || ".artifacts/browser";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const VOICE = process.env.EXPECT_VOICE === "1"; // BASE_URL answers GET /voices (the wrapper asks it)
const TIMEOUT_MS = 20_000;
const PASSWORD = "correct horse battery staple";

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const problems = []; // page errors and CSP violations, from every page
function watch(page, name) {
  openPages.add(page);
  page.on("pageerror", (error) => problems.push(`${name}: uncaught ${error.message}`));
  page.on("console", (msg) => {
    const text = msg.text();
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`${name}: ${text}`);
  });
  page.setDefaultTimeout(TIMEOUT_MS);
  return page;
}

async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  console.log(`screenshot ${path}`);
}

const openPages = new Set();
async function step(name, body) {
  const started = Date.now();
  try {
    await body();
  } catch (error) {
    let i = 0;
    for (const page of openPages) {
      if (!page.isClosed()) await page.screenshot({ path: join(SHOTS, `failed-${name.split(".")[0]}-${i++}.png`) }).catch(() => {});
    }
    throw error;
  }
  if (problems.length) throw new Error(`${name}: ${problems.join("; ")}`);
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

async function signUp(page, base, email) {
  await page.goto(base);
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await page.click("#signup");
  await page.waitForSelector("#chat");
}

/** Samples the last reply while it streams: the distinct texts seen, until it is no longer streaming. */
async function watchStream(page, { stopAfterWords = 0 } = {}) {
  const reply = page.locator("#messages .message.assistant").last();
  const seen = [];
  let stopped = false;
  const deadline = Date.now() + TIMEOUT_MS;
  while (Date.now() < deadline) {
    const [text, streaming] = await reply.evaluate((el) => [el.querySelector(".body")?.textContent ?? "", el.classList.contains("streaming")]);
    if (text && text !== "…" && seen.at(-1) !== text) seen.push(text);
    if (!streaming && seen.length) return { seen, final: text };
    if (stopAfterWords && !stopped && text.split(/\s+/).length >= stopAfterWords) {
      await page.click("#stop");
      stopped = true;
    }
    await page.waitForTimeout(40);
  }
  throw new Error(`the reply did not finish streaming: ${JSON.stringify(seen.slice(-2))}`);
}

async function main() {
  await mkdir(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // a fake microphone (a tone) that needs no permission prompt, for step 8
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
  });
  try {
    const email = `web-${Date.now().toString(36)}@example.com`;
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = watch(await context.newPage(), "page 1");
    const firstPrompt =
      "Hello from the browser. Here is **bold text**, `inline code` and a block:\n\n```python\ndef greet(name):\n    return f'hi {name}'\n```\n\n<img src=x onerror=\"window.__xss=1\"> stays text.";

    await step("1. sign up and chat: the reply streams in", async () => {
      await signUp(page, BASE, email);
      await page.fill("#prompt", firstPrompt);
      await page.press("#prompt", "Enter"); // the keyboard sends
      await page.waitForSelector("#messages .message.assistant.streaming .body:not(:has(.typing))");
      await shot(page, "1-streaming");
      const { seen, final } = await watchStream(page);
      check(seen.length >= 3, `the reply arrived in pieces (saw ${seen.length} distinct texts)`);
      check(final.startsWith("You said: Hello from the browser."), `the reply is the echo: ${final.slice(0, 80)}`);
      const reply = page.locator("#messages .message.assistant").last();
      check((await reply.locator("strong").count()) === 1, "Markdown: **bold** is rendered bold");
      check((await reply.locator("pre code .hljs-keyword").count()) >= 1, "the python block is highlighted");
      check((await reply.locator("img").count()) === 0, "raw HTML in a reply is not rendered");
      check((await page.evaluate(() => window.__xss)) === undefined, "no script ran from the reply");
      await page.waitForSelector("#conversation-list li.active");
      await shot(page, "1-chat");
    });

    const longPrompt = Array.from({ length: 150 }, (_, i) => `word${i}`).join(" ");
    await step("2. stop a reply", async () => {
      await page.fill("#prompt", longPrompt);
      await page.click("#send");
      await page.waitForSelector("#stop:not([hidden])");
      const { final } = await watchStream(page, { stopAfterWords: 8 });
      const reply = page.locator("#messages .message.assistant").last();
      await reply.locator(".stopped").waitFor();
      const words = final.trim().split(/\s+/).length;
      check(words < 100, `the stopped reply is cut short (${words} of 152 words)`);
      check(await page.locator("#send").isVisible(), "Send is back after Stop");
      await shot(page, "2-stopped");
    });

    let conversationId = "";
    await step("3. reload: the history is there", async () => {
      conversationId = await page.locator("#conversation-list li.active").getAttribute("data-id");
      check(conversationId, "the conversation is in the list");
      await page.reload();
      await page.waitForSelector(`#conversation-list li[data-id="${conversationId}"]`);
      await page.waitForSelector("#messages .message.assistant .stopped");
      const messages = page.locator("#messages .message");
      check((await messages.count()) === 4, `two prompts and two replies (${await messages.count()})`);
      check((await page.locator("#messages .message.assistant strong").count()) === 1, "history is Markdown too");
      check((await page.locator("#messages .message.assistant pre code .hljs-keyword").count()) >= 1, "history code is highlighted");
      await shot(page, "3-reloaded");
    });

    await step("4. a second tab and a second device see the conversation appear", async () => {
      const tab = watch(await context.newPage(), "tab 2"); // same browser: signed in already
      await tab.goto(BASE);
      await tab.waitForSelector(`#conversation-list li[data-id="${conversationId}"]`);
      const device = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const other = watch(await device.newPage(), "device 2");
      await other.goto(BASE);
      await other.fill("#email", email);
      await other.fill("#password", PASSWORD);
      await other.click("#login");
      await other.waitForSelector(`#conversation-list li[data-id="${conversationId}"]`);
      // a new conversation on page 1 appears in the other tab (BroadcastChannel) and on the other device (polling
      // GET /conversations?updated_since=...)
      await page.click("#new-chat");
      await page.fill("#prompt", "A second conversation, to sync");
      await page.press("#prompt", "Enter");
      await watchStream(page);
      const title = "A second conversation, to sync";
      await tab.waitForSelector(`#conversation-list li .title:text-is("${title}")`);
      await other.waitForSelector(`#conversation-list li .title:text-is("${title}")`, { timeout: 15_000 });
      // a rename on the other device reaches page 1
      const row = other.locator("#conversation-list li", { has: other.locator(`.title:text-is("${title}")`) });
      await row.locator("button.rename").click();
      await other.fill("#conversation-list .rename-input", "Renamed on device 2");
      await other.press("#conversation-list .rename-input", "Enter");
      await page.waitForSelector('#conversation-list li .title:text-is("Renamed on device 2")', { timeout: 15_000 });
      // search (the server's GET /conversations/search, or the titles where it has none): the older conversation,
      // second in the list, comes first
      const [searched] = await Promise.all([
        page.waitForResponse((r) => r.url().includes("/conversations/search?")),
        page.fill("#search", "Hello from the browser"),
      ]);
      check([200, 404, 501].includes(searched.status()), `search answered ${searched.status()}`);
      await page.waitForFunction((id) => document.querySelector("#conversation-list li")?.dataset.id === id, conversationId);
      await shot(page, "4-search");
      await page.fill("#search", "");
      await page.waitForFunction(() => document.querySelector("#conversation-list li .title")?.textContent === "Renamed on device 2");
      await shot(tab, "4-second-tab");
      await shot(other, "4-second-device");
      await tab.close();
      await device.close();
    });

    await step("5. upload a file and export a PDF", async () => {
      await page.click(`#conversation-list li[data-id="${conversationId}"] button.open`);
      await page.waitForSelector("#messages .message.assistant .stopped");
      await page.setInputFiles("#file-input", {
        name: "notes.txt",
        mimeType: "text/plain",
        buffer: Buffer.from("notes for the conversation\n"),
      });
      await page.waitForSelector('#attachments .chip:has-text("notes.txt")');
      check(await page.locator("#attachments .chip").first().textContent().then((t) => t.includes("text/plain")), "the file's type is shown");
      const [pdf] = await Promise.all([page.waitForEvent("download"), page.click("#export-pdf")]);
      const pdfPath = join(SHOTS, "export.pdf");
      await pdf.saveAs(pdfPath);
      const bytes = await readFile(pdfPath);
      check(bytes.subarray(0, 5).toString() === "%PDF-" && bytes.length > 500, `a PDF was downloaded (${bytes.length} bytes)`);
      check(pdf.suggestedFilename() === `conversation-${conversationId}.pdf`, `named after the conversation: ${pdf.suggestedFilename()}`);
      const [json] = await Promise.all([page.waitForEvent("download"), page.click("#export-json")]);
      const exported = JSON.parse(await readFile(await json.path(), "utf8"));
      check(JSON.stringify(exported).includes("Hello from the browser."), "the JSON export holds the messages");
      await shot(page, "5-upload-export");
      // delete (after a confirmation): gone from the list, here and in the store
      const doomed = page.locator("#conversation-list li", { has: page.locator('.title:text-is("Renamed on device 2")') });
      page.once("dialog", (dialog) => dialog.accept());
      await doomed.locator("button.delete").click();
      await doomed.waitFor({ state: "detached" });
      await page.reload();
      await page.waitForSelector(`#conversation-list li[data-id="${conversationId}"]`);
      check((await page.locator('#conversation-list li .title:text-is("Renamed on device 2")').count()) === 0, "deleted for good");
    });

    await step("6. a rate limit is shown", async () => {
      const limited = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const lp = watch(await limited.newPage(), "limited");
      await signUp(lp, LIMITED, `limited-${Date.now().toString(36)}@example.com`);
      let refused = "";
      for (let i = 0; i < 12 && !refused; i++) {
        const message = `message ${i}`;
        await lp.fill("#prompt", message);
        await lp.press("#prompt", "Enter"); // sends at once: the box empties, Stop shows
        await lp.waitForSelector("#stop", { state: "hidden" }); // the reply finished, or was refused
        // refused: the notice shows and the message is back in the box, to send again later
        if ((await lp.locator("#notice.limit").isVisible()) && (await lp.inputValue("#prompt")) === message) refused = message;
      }
      check(refused, "a message was refused with a rate-limit notice");
      const text = await lp.locator("#notice").textContent();
      check(/Rate limit reached/.test(text) && /retry in \d+ ?s/i.test(text), `the notice says what happened and when to retry: ${text}`);
      const bubbles = await lp.locator("#messages .message.user").allTextContents();
      check(!bubbles.some((t) => t.includes(refused)), "the refused message is not shown as sent");
      await shot(lp, "6-rate-limit");
      await limited.close();
    });

    await step("7. phone width and dark mode", async () => {
      const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: "dark", isMobile: true, hasTouch: true });
      const pp = watch(await phone.newPage(), "phone");
      await signUp(pp, BASE, `phone-${Date.now().toString(36)}@example.com`);
      check(await pp.locator("#menu").isVisible(), "the menu button shows at phone width");
      const box = await pp.locator("#sidebar").boundingBox();
      check(!box || box.x + box.width <= 1, "the list is a drawer, off screen");
      const width = await pp.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 390, `nothing wider than the phone (${width}px)`);
      const bg = await pp.evaluate(() => getComputedStyle(document.body).backgroundColor);
      check(bg === "rgb(21, 23, 28)", `dark background in dark mode (${bg})`);
      await shot(pp, "7-phone-dark");
      await pp.click("#menu");
      await pp.waitForFunction(() => document.querySelector("#sidebar").getBoundingClientRect().x >= 0);
      await shot(pp, "7-phone-menu");
      await phone.close();
    });
    await step(`8. voice: ${VOICE ? "read a reply aloud, speak a message" : "no voice endpoints, no voice buttons"}`, async () => {
      const vp = watch(await context.newPage(), "voice"); // signed in (same browser as page 1)
      await vp.goto(`${BASE}/#c=${conversationId}`);
      await vp.waitForSelector("#messages .message.assistant");
      if (!VOICE) {
        await vp.waitForTimeout(500); // GET /voices has answered
        check(!(await vp.locator("#mic").isVisible()), "no microphone button without /voices");
        check((await vp.locator("#messages .speak").count()) === 0, "no read-aloud buttons without /voices");
        await shot(vp, "8-voice");
        return;
      }
      await vp.waitForSelector("#mic:not([hidden])");
      const [spoken] = await Promise.all([
        vp.waitForResponse((r) => r.url().endsWith("/synthesize")),
        vp.locator("#messages .message.assistant .speak").first().click(),
      ]);
      check(spoken.status() === 200 && spoken.headers()["content-type"].startsWith("audio/wav"), `/synthesize: ${spoken.status()}`);
      await vp.click("#mic");
      await vp.waitForSelector("#mic.recording");
      await vp.waitForTimeout(1500);
      const [heard] = await Promise.all([vp.waitForResponse((r) => r.url().endsWith("/transcribe")), vp.click("#mic")]);
      check(heard.status() === 200, `/transcribe took the browser's WAV: ${heard.status()} ${await heard.text()}`);
      const transcript = await heard.json();
      // the server read the browser's WAV: 1.5 s recorded (the fake microphone's tone has no words to find)
      check(typeof transcript.text === "string" && transcript.duration_s >= 1, `a transcript: ${JSON.stringify(transcript)}`);
      await shot(vp, "8-voice");
    });
    await step("9. log out: every tab of the browser shows the sign-in form", async () => {
      await page.click("#logout");
      await page.waitForSelector("#auth-form");
      check((await page.evaluate(() => localStorage.getItem("gpt.refresh_token"))) === null, "the refresh token is gone");
      const other = [...openPages].find((p) => p !== page && !p.isClosed() && p.context() === context);
      if (other) await other.waitForSelector("#auth-form"); // told by the BroadcastChannel
      await page.reload();
      await page.waitForSelector("#auth-form");
      await shot(page, "9-logged-out");
    });
    await writeFile(join(SHOTS, "result.txt"), "passed\n");
    console.log("browser test passed");
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
