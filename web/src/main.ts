// The chat page: accounts, conversations (list, search, rename, delete, synced across tabs and devices),
// streaming replies over the WebSocket with a stop button, files, export, usage and limits, voice, dark mode.

import "./style.css";

import { Api, ApiError, type Conversation, type FileInfo, type Message, type SearchResult, type Voice } from "./api";
import { $, download, formatBytes, h, icon, relativeTime } from "./dom";
import { renderMarkdown } from "./markdown";
import { Recorder } from "./voice";
import { GenerationSocket } from "./ws";

const POLL_MS = 4000;
const FULL_SYNC_EVERY = 5; // every 5th poll reloads the first page: deletions do not show in updated_since
const THEME_KEY = "gpt.theme";

const api = new Api();
const socket = new GenerationSocket(api);
const channel = typeof BroadcastChannel !== "undefined" ? new BroadcastChannel("gpt-web") : null;

interface Streaming {
  requestId: string | null;
  stopped: boolean;
}

const state = {
  email: "",
  conversations: new Map<string, Conversation>(),
  nextCursor: null as string | null,
  current: null as string | null,
  currentCount: -1,
  lastSync: null as string | null,
  polls: 0,
  streaming: null as Streaming | null,
  searchResults: null as SearchResult[] | null,
  voices: null as Voice[] | null,
  attachments: new Map<string, FileInfo[]>(),
  recorder: null as Recorder | null,
  audio: null as HTMLAudioElement | null,
  pollTimer: 0,
};

// ---------- theme ----------

function applyTheme(theme: string): void {
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const button = document.getElementById("theme");
  if (button) button.textContent = `Theme: ${theme}`;
}

function cycleTheme(): void {
  const order = ["auto", "dark", "light"];
  const now = localStorage.getItem(THEME_KEY) || "auto";
  const next = order[(order.indexOf(now) + 1) % order.length] ?? "auto";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
}

// ---------- notices ----------

function describe(error: unknown): { kind: string; text: string } {
  if (error instanceof ApiError) {
    const said = /retry in \d+ ?s/i.test(error.message); // the server's message may say it already
    const retry = error.retryAfterS && !said ? ` Try again in ${error.retryAfterS} s.` : "";
    if (error.type === "insufficient_quota") return { kind: "limit", text: `Quota exhausted: ${error.message}.${retry}` };
    if (error.isLimit) return { kind: "limit", text: `Rate limit reached: ${error.message}.${retry}` };
    if (error.status === 413) return { kind: "error", text: `Too large: ${error.message}` };
    if (error.status === 503) return { kind: "error", text: `The server is busy: ${error.message}.${retry}` };
    return { kind: "error", text: error.message };
  }
  return { kind: "error", text: error instanceof Error ? error.message : String(error) };
}

function notify(error: unknown): void {
  const { kind, text } = describe(error);
  showNotice(kind, text);
}

function showNotice(kind: string, text: string): void {
  const notice = document.getElementById("notice");
  if (!notice) return;
  notice.className = `notice ${kind}`;
  notice.replaceChildren(
    h("span", { class: "notice-text" }, text),
    h("button", { class: "icon", "aria-label": "Dismiss", onclick: () => (notice.hidden = true) }, icon("close")),
  );
  notice.hidden = false;
}

function clearNotice(): void {
  const notice = document.getElementById("notice");
  if (notice) notice.hidden = true;
}

// ---------- sign in ----------

function renderAuth(message = ""): void {
  socket.close();
  window.clearInterval(state.pollTimer);
  state.conversations.clear();
  state.current = null;
  state.lastSync = null;
  const error = h("p", { id: "auth-error", class: "auth-error", role: "alert" }, message);
  const email = h("input", { id: "email", type: "email", required: true, autocomplete: "username", maxlength: 254 });
  const password = h("input", {
    id: "password",
    type: "password",
    required: true,
    minlength: 8,
    maxlength: 256,
    autocomplete: "current-password",
  });
  const submit = async (mode: "login" | "signup") => {
    if (!form.reportValidity()) return;
    error.textContent = "";
    form.classList.add("busy");
    try {
      if (mode === "signup") await api.signup(email.value, password.value);
      else await api.login(email.value, password.value);
      channel?.postMessage({ type: "login" });
      await startChat();
    } catch (e) {
      error.textContent = describe(e).text;
    } finally {
      form.classList.remove("busy");
    }
  };
  const form = h(
    "form",
    {
      id: "auth-form",
      class: "auth",
      onsubmit: (event: SubmitEvent) => {
        event.preventDefault();
        void submit("login");
      },
    },
    h("h1", {}, "gpt-runtime"),
    h("p", { class: "muted" }, "Sign in to chat with the model this deployment serves."),
    h("label", { for: "email" }, "Email"),
    email,
    h("label", { for: "password" }, "Password (8 characters or more)"),
    password,
    h(
      "div",
      { class: "row" },
      h("button", { id: "login", type: "submit", class: "primary" }, "Log in"),
      h("button", { id: "signup", type: "button", onclick: () => void submit("signup") }, "Sign up"),
    ),
    error,
  );
  $("#app").replaceChildren(h("main", { class: "auth-view" }, form));
  email.focus();
}

// ---------- layout ----------

function renderShell(): void {
  const fileInput = h("input", {
    id: "file-input",
    type: "file",
    hidden: true,
    accept: "image/*,application/pdf,audio/*,application/json,text/plain,.txt,.md,.json",
    onchange: () => void uploadSelected(fileInput),
  });
  const sidebar = h(
    "aside",
    { id: "sidebar", "aria-label": "Conversations" },
    h(
      "div",
      { class: "sidebar-top" },
      h("button", { id: "new-chat", class: "primary", onclick: newChat, title: "New chat (Alt+N)" }, "+ New chat"),
      h("input", {
        id: "search",
        type: "search",
        placeholder: "Search (Ctrl+K)",
        "aria-label": "Search conversations",
        maxlength: 200,
        oninput: onSearchInput,
      }),
    ),
    h("ul", { id: "conversation-list", class: "conversations", "aria-label": "Conversation list" }),
    h("button", { id: "more", class: "link", hidden: true, onclick: () => void loadMore() }, "Load more"),
    h(
      "details",
      { id: "usage-panel", ontoggle: () => void refreshUsage() },
      h("summary", {}, "Usage and limits"),
      h("div", { id: "usage" }, "…"),
    ),
    h(
      "div",
      { class: "account" },
      h("span", { id: "account-email", class: "muted" }, state.email),
      h("div", { class: "row" }, h("button", { id: "theme", onclick: cycleTheme }, "Theme"), h("button", { id: "logout", onclick: logout }, "Log out")),
    ),
  );
  const main = h(
    "main",
    { id: "chat", "aria-label": "Chat" },
    h(
      "header",
      { class: "chat-header" },
      h("button", { id: "menu", class: "icon", "aria-label": "Conversations", "aria-controls": "sidebar", onclick: toggleNav }, icon("menu")),
      h("h2", { id: "chat-title" }, "New chat"),
      h("select", { id: "model-picker", "aria-label": "Model", hidden: true }),
      h("button", { id: "export-json", disabled: true, onclick: () => void exportAs("json") }, "Export JSON"),
      h("button", { id: "export-pdf", disabled: true, onclick: () => void exportAs("pdf") }, "Export PDF"),
    ),
    h("div", { id: "messages", class: "messages", role: "log", "aria-live": "polite", tabindex: 0 }),
    h("div", { id: "attachments", class: "attachments", "aria-label": "Files in this conversation" }),
    h("div", { id: "notice", class: "notice", role: "alert", hidden: true }),
    h(
      "form",
      { id: "composer", class: "composer", onsubmit: (event: SubmitEvent) => (event.preventDefault(), void send()) },
      fileInput,
      h("button", { id: "attach", type: "button", class: "icon", "aria-label": "Upload a file", title: "Upload a file", onclick: () => fileInput.click() }, icon("attach")),
      h("textarea", {
        id: "prompt",
        rows: 2,
        placeholder: "Message (Enter sends, Shift+Enter for a new line)",
        "aria-label": "Message",
        onkeydown: onPromptKey,
      }),
      h("button", { id: "mic", type: "button", class: "icon", hidden: true, "aria-label": "Speak a message", title: "Speak", onclick: () => void toggleMic() }, icon("mic")),
      h("button", { id: "send", type: "submit", class: "primary" }, "Send"),
      h("button", { id: "stop", type: "button", class: "danger", hidden: true, onclick: stop, title: "Stop (Esc)" }, "Stop"),
    ),
  );
  $("#app").replaceChildren(h("div", { class: "layout" }, sidebar, h("div", { class: "scrim", onclick: toggleNav }), main));
  applyTheme(localStorage.getItem(THEME_KEY) || "auto");
}

function toggleNav(): void {
  document.body.classList.toggle("nav-open");
}

// ---------- conversations ----------

function sortedConversations(): Conversation[] {
  return [...state.conversations.values()].sort((a, b) => b.updated_at.localeCompare(a.updated_at));
}

function noteSync(items: Conversation[]): void {
  for (const c of items) if (!state.lastSync || c.updated_at > state.lastSync) state.lastSync = c.updated_at;
}

async function loadConversations(): Promise<void> {
  const page = await api.listConversations();
  state.conversations = new Map(page.items.map((c) => [c.id, c]));
  state.nextCursor = page.next_cursor;
  noteSync(page.items);
  renderList();
  await followCurrent();
}

async function loadMore(): Promise<void> {
  if (!state.nextCursor) return;
  try {
    const page = await api.listConversations({ cursor: state.nextCursor });
    for (const c of page.items) state.conversations.set(c.id, c);
    state.nextCursor = page.next_cursor;
    renderList();
  } catch (e) {
    notify(e);
  }
}

/** Changes since the last one seen (other tabs, other devices); a full reload now and then for deletions. */
async function poll(): Promise<void> {
  if (document.visibilityState !== "visible" || !api.signedIn) return;
  try {
    if (++state.polls % FULL_SYNC_EVERY === 0 || !state.lastSync) {
      await loadConversations();
      return;
    }
    const page = await api.listConversations({ updatedSince: state.lastSync });
    if (page.items.length === 0) return;
    for (const c of page.items) state.conversations.set(c.id, c);
    noteSync(page.items);
    renderList();
    await followCurrent();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    if (e instanceof ApiError && e.isLimit) notify(e);
  }
}

/** The open conversation changed elsewhere (new messages, renamed, deleted): show what the server has. */
async function followCurrent(): Promise<void> {
  if (!state.current || state.streaming) return;
  const current = state.conversations.get(state.current);
  if (!current) {
    if (state.nextCursor === null) newChat(); // deleted elsewhere
    return;
  }
  $("#chat-title").textContent = current.title;
  if (current.message_count !== state.currentCount) await openConversation(current.id, { quiet: true });
}

function renderList(): void {
  const list = document.getElementById("conversation-list");
  if (!list) return;
  const query = (document.getElementById("search") as HTMLInputElement | null)?.value.trim().toLowerCase() ?? "";
  let rows: { id: string; title: string; detail: string }[];
  if (query && state.searchResults) {
    rows = state.searchResults.map((r) => ({ id: r.conversation_id, title: r.title, detail: r.snippet }));
  } else {
    rows = sortedConversations()
      .filter((c) => !query || c.title.toLowerCase().includes(query))
      .map((c) => ({ id: c.id, title: c.title, detail: `${c.message_count} messages · ${relativeTime(c.updated_at)}` }));
  }
  list.replaceChildren(
    ...rows.map((row) =>
      h(
        "li",
        { "data-id": row.id, class: row.id === state.current ? "active" : "" },
        h(
          "button",
          { class: "open", "aria-current": row.id === state.current ? "true" : null, onclick: () => void openConversation(row.id) },
          h("span", { class: "title" }, row.title),
          h("span", { class: "detail muted" }, row.detail),
        ),
        h("button", { class: "icon rename", "aria-label": `Rename ${row.title}`, title: "Rename", onclick: () => startRename(row.id) }, icon("edit")),
        h("button", { class: "icon delete", "aria-label": `Delete ${row.title}`, title: "Delete", onclick: () => void removeConversation(row.id) }, icon("trash")),
      ),
    ),
  );
  if (rows.length === 0) list.append(h("li", { class: "empty muted" }, query ? "Nothing found" : "No conversations yet"));
  const more = document.getElementById("more");
  if (more) more.hidden = !state.nextCursor || Boolean(query);
}

function startRename(id: string): void {
  const conversation = state.conversations.get(id);
  const row = document.querySelector<HTMLElement>(`#conversation-list li[data-id="${CSS.escape(id)}"]`);
  if (!conversation || !row) return;
  const input = h("input", { class: "rename-input", value: conversation.title, maxlength: 200, "aria-label": "New title" });
  let finished = false;
  const finish = async (save: boolean) => {
    if (finished) return; // Enter, then the blur of the removed input
    finished = true;
    const title = input.value.trim();
    if (save && title && title !== conversation.title) {
      try {
        const renamed = await api.rename(id, title);
        state.conversations.set(id, renamed);
        noteSync([renamed]);
        if (id === state.current) $("#chat-title").textContent = renamed.title;
        broadcast();
      } catch (e) {
        notify(e);
      }
    }
    renderList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") void finish(true);
    if (event.key === "Escape") void finish(false);
  });
  input.addEventListener("blur", () => void finish(true), { once: true });
  row.replaceChildren(input);
  input.focus();
  input.select();
}

async function removeConversation(id: string): Promise<void> {
  const conversation = state.conversations.get(id);
  if (!window.confirm(`Delete "${conversation?.title ?? "this conversation"}"? This cannot be undone.`)) return;
  try {
    await api.remove(id);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) return notify(e);
  }
  state.conversations.delete(id);
  if (id === state.current) newChat();
  renderList();
  broadcast();
}

let searchTimer = 0;
function onSearchInput(): void {
  window.clearTimeout(searchTimer);
  searchTimer = window.setTimeout(async () => {
    const q = (document.getElementById("search") as HTMLInputElement).value.trim();
    state.searchResults = null;
    if (q) {
      try {
        state.searchResults = await api.search(q); // null: this server has no search, filter the titles
      } catch (e) {
        notify(e);
      }
    }
    renderList();
  }, 250);
}

function newChat(): void {
  if (state.streaming) stop();
  state.current = null;
  state.currentCount = -1;
  history.replaceState(null, "", location.pathname);
  $("#chat-title").textContent = "New chat";
  $("#messages").replaceChildren(h("p", { class: "empty muted" }, "Ask anything. Replies stream in as they are written."));
  renderAttachments();
  setExportEnabled(false);
  renderList();
  document.body.classList.remove("nav-open");
  ($("#prompt") as HTMLTextAreaElement).focus();
}

async function openConversation(id: string, options: { quiet?: boolean } = {}): Promise<void> {
  try {
    const detail = await api.conversation(id);
    if (options.quiet && (state.current !== id || state.streaming)) return; // the user moved on meanwhile
    state.current = id;
    state.currentCount = detail.message_count;
    state.conversations.set(id, detail);
    history.replaceState(null, "", `#c=${encodeURIComponent(id)}`);
    $("#chat-title").textContent = detail.title;
    const messages = $("#messages");
    messages.replaceChildren(...detail.messages.filter((m) => m.role !== "system").map(messageView));
    if (detail.messages.length === 0) messages.append(h("p", { class: "empty muted" }, "No messages yet."));
    messages.scrollTop = messages.scrollHeight;
    renderAttachments();
    setExportEnabled(true);
    renderList();
    if (!options.quiet) document.body.classList.remove("nav-open");
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      state.conversations.delete(id);
      newChat();
      return;
    }
    notify(e);
  }
}

// ---------- messages ----------

function messageView(message: Pick<Message, "role" | "content" | "finish_reason">): HTMLElement {
  const body = h("div", { class: "body" });
  body.innerHTML = renderMarkdown(message.content); // sanitized by DOMPurify
  const view = h("article", { class: `message ${message.role}`, "aria-label": message.role === "user" ? "You" : "Assistant" }, body);
  if (message.role === "assistant") decorateReply(view, message.content, message.finish_reason);
  return view;
}

function decorateReply(view: HTMLElement, text: string, finishReason: string | null): void {
  view.querySelector(".meta")?.remove();
  const meta = h("div", { class: "meta" });
  if (finishReason === "cancelled") meta.append(h("span", { class: "stopped" }, "Stopped"));
  if (finishReason === "length") meta.append(h("span", { class: "muted" }, "Cut at the length limit"));
  if (state.voices && text.trim()) {
    meta.append(h("button", { class: "speak link", "aria-label": "Read aloud", onclick: () => void speak(text) }, icon("speaker"), " Read aloud"));
  }
  meta.append(h("button", { class: "copy link", "aria-label": "Copy", onclick: () => void navigator.clipboard?.writeText(text) }, "Copy"));
  view.append(meta);
}

function setStreaming(on: boolean): void {
  $("#send").hidden = on;
  $("#stop").hidden = !on;
  if (!on) state.streaming = null;
}

async function send(): Promise<void> {
  const prompt = $("#prompt") as HTMLTextAreaElement;
  const text = prompt.value.trim();
  if (!text || state.streaming) return;
  clearNotice();
  prompt.value = "";
  const messages = $("#messages");
  messages.querySelector(".empty")?.remove();
  const mine = messageView({ role: "user", content: text, finish_reason: null });
  const body = h("div", { class: "body" }, h("span", { class: "typing", "aria-label": "Writing" }, "…"));
  const reply = h("article", { class: "message assistant streaming", "aria-label": "Assistant", "aria-busy": "true" }, body);
  messages.append(mine, reply);
  messages.scrollTop = messages.scrollHeight;
  const streaming: Streaming = { requestId: null, stopped: false };
  state.streaming = streaming;
  setStreaming(true);
  let buffer = "";
  let frame = 0;
  const paint = () => {
    frame = 0;
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    body.innerHTML = renderMarkdown(buffer); // sanitized by DOMPurify
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  };
  const fail = (error: unknown) => {
    if (frame) cancelAnimationFrame(frame);
    reply.remove();
    mine.remove();
    if (!prompt.value) prompt.value = text; // keep what was typed, to send again
    setStreaming(false);
    notify(error);
  };
  try {
    streaming.requestId = await socket.generate(text, state.current, {
      delta: (piece) => {
        buffer += piece;
        frame ||= requestAnimationFrame(paint);
      },
      done: (done) => {
        if (frame) cancelAnimationFrame(frame);
        paint();
        reply.classList.remove("streaming");
        reply.removeAttribute("aria-busy");
        decorateReply(reply, buffer, done.finish_reason);
        setStreaming(false);
        if (done.conversation_id) {
          const created = state.current !== done.conversation_id;
          state.current = done.conversation_id;
          history.replaceState(null, "", `#c=${encodeURIComponent(done.conversation_id)}`);
          setExportEnabled(true);
          if (created) renderAttachments();
        }
        state.currentCount = -1; // the list's reload re-reads the conversation as the server stored it
        void loadConversations().catch(notify);
        void refreshUsage();
        broadcast();
      },
      error: fail,
    });
    if (streaming.stopped) socket.cancel(streaming.requestId);
  } catch (e) {
    fail(e);
  }
}

function stop(): void {
  const streaming = state.streaming;
  if (!streaming) return;
  streaming.stopped = true;
  if (streaming.requestId) socket.cancel(streaming.requestId);
}

function onPromptKey(event: KeyboardEvent): void {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    void send();
  }
}

// ---------- files and export ----------

function setExportEnabled(on: boolean): void {
  ($("#export-json") as HTMLButtonElement).disabled = !on;
  ($("#export-pdf") as HTMLButtonElement).disabled = !on;
}

async function uploadSelected(input: HTMLInputElement): Promise<void> {
  const file = input.files?.[0];
  input.value = "";
  if (!file) return;
  clearNotice();
  try {
    if (!state.current) {
      const created = await api.createConversation(file.name.slice(0, 200) || "Files");
      state.conversations.set(created.id, created);
      state.current = created.id;
      state.currentCount = created.message_count;
      history.replaceState(null, "", `#c=${encodeURIComponent(created.id)}`);
      $("#chat-title").textContent = created.title;
      setExportEnabled(true);
      broadcast();
    }
    const info = await api.upload(file, file.name, state.current);
    const list = state.attachments.get(state.current) ?? [];
    list.push(info);
    state.attachments.set(state.current, list);
    renderAttachments();
    renderList();
  } catch (e) {
    notify(e);
  }
}

function renderAttachments(): void {
  const files = (state.current && state.attachments.get(state.current)) || [];
  $("#attachments").replaceChildren(
    ...files.map((f) =>
      h(
        "button",
        {
          class: "chip",
          title: "Download",
          onclick: async () => {
            try {
              download(await api.fileBlob(f.id), f.filename || f.id);
            } catch (e) {
              notify(e);
            }
          },
        },
        icon("attach"),
        ` ${f.filename || f.id} · ${f.content_type} · ${formatBytes(f.bytes)}`,
      ),
    ),
  );
}

async function exportAs(format: "json" | "pdf"): Promise<void> {
  if (!state.current) return;
  try {
    download(await api.exportBlob(state.current, format), `conversation-${state.current}.${format}`);
  } catch (e) {
    notify(e);
  }
}

// ---------- usage, models ----------

async function refreshUsage(): Promise<void> {
  const panel = document.getElementById("usage-panel") as HTMLDetailsElement | null;
  if (!panel?.open) return;
  try {
    const usage = await api.usage();
    const q = usage.limits.quota;
    const limit = (n: number) => (n ? String(n) : "unlimited");
    const rows: [string, string][] = [
      ["Tier", usage.tier],
      ["Requests (24 h)", String(usage.requests)],
      ["Tokens (24 h)", `${usage.total_tokens} (${usage.prompt_tokens} in, ${usage.completion_tokens} out)`],
      ["Estimated cost", `$${usage.estimated_cost_usd.toFixed(4)}`],
      ["Requests per minute", limit(usage.limits.requests_per_minute)],
      ["Generations per minute / day", `${limit(q.rpm)} / ${limit(q.rpd)}`],
      ["Tokens per minute / day", `${limit(q.tpm)} / ${limit(q.tpd)}`],
    ];
    if (api.rate) rows.push(["Requests left this minute", `${api.rate.remaining} of ${api.rate.limit}`]);
    $("#usage").replaceChildren(
      h("dl", { class: "usage" }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
  } catch (e) {
    $("#usage").replaceChildren(h("p", { class: "notice-inline" }, describe(e).text));
  }
}

async function loadModels(): Promise<void> {
  try {
    const models = await api.models();
    const picker = $("#model-picker") as HTMLSelectElement;
    picker.replaceChildren(...models.map((id) => h("option", { value: id }, id)));
    picker.hidden = models.length < 2; // one model: nothing to pick
  } catch {
    // the picker stays hidden
  }
}

// ---------- voice ----------

async function loadVoices(): Promise<void> {
  try {
    state.voices = await api.voices();
  } catch {
    state.voices = null;
  }
  $("#mic").hidden = !(state.voices && Recorder.supported);
}

async function speak(text: string): Promise<void> {
  if (state.audio) {
    state.audio.pause();
    state.audio = null;
    return;
  }
  try {
    const wav = await api.synthesize(text.slice(0, 4000), null); // the server's default voice
    const url = URL.createObjectURL(wav);
    const audio = new Audio(url);
    state.audio = audio;
    audio.onended = () => {
      URL.revokeObjectURL(url);
      state.audio = null;
    };
    await audio.play();
  } catch (e) {
    state.audio = null;
    if (e instanceof ApiError && [404, 501].includes(e.status)) showNotice("error", "Reading aloud is not available on this server.");
    else notify(e);
  }
}

async function toggleMic(): Promise<void> {
  const mic = $("#mic");
  if (state.recorder) {
    const recorder = state.recorder;
    state.recorder = null;
    mic.classList.remove("recording");
    mic.setAttribute("aria-pressed", "false");
    try {
      const text = await api.transcribe(await recorder.stop());
      const prompt = $("#prompt") as HTMLTextAreaElement;
      prompt.value = [prompt.value.trim(), text.trim()].filter(Boolean).join(" ");
      prompt.focus();
    } catch (e) {
      if (e instanceof ApiError && [404, 501].includes(e.status)) showNotice("error", "Speech input is not available on this server.");
      else notify(e);
    }
    return;
  }
  try {
    const recorder = new Recorder();
    await recorder.start();
    state.recorder = recorder;
    mic.classList.add("recording");
    mic.setAttribute("aria-pressed", "true");
    showNotice("info", "Listening… press the microphone again to stop.");
  } catch (e) {
    showNotice("error", `The microphone is not available: ${e instanceof Error ? e.message : String(e)}`);
  }
}

// ---------- session ----------

function broadcast(): void {
  channel?.postMessage({ type: "changed" });
}

function logout(): void {
  api.logout();
  channel?.postMessage({ type: "logout" });
  renderAuth("Logged out.");
}

function onKey(event: KeyboardEvent): void {
  if (!document.getElementById("chat")) return;
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
    event.preventDefault();
    document.body.classList.add("nav-open");
    ($("#search") as HTMLInputElement).focus();
  } else if (event.altKey && event.key.toLowerCase() === "n") {
    event.preventDefault();
    newChat();
  } else if (event.key === "Escape") {
    if (state.streaming) stop();
    else document.body.classList.remove("nav-open");
  }
}

async function startChat(): Promise<void> {
  const me = await api.me();
  state.email = me.email;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("c"); // the conversation open before a reload
  renderShell();
  newChat();
  await Promise.all([loadModels(), loadVoices()]); // before any reply is drawn: its read-aloud button needs voices
  await loadConversations();
  if (wanted) await openConversation(wanted);
  window.clearInterval(state.pollTimer);
  state.pollTimer = window.setInterval(() => void poll(), POLL_MS);
}

async function boot(): Promise<void> {
  applyTheme(localStorage.getItem(THEME_KEY) || "auto");
  api.onSignedOut = () => renderAuth("Your session ended: sign in again.");
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", () => void poll());
  channel?.addEventListener("message", (event: MessageEvent<{ type: string }>) => {
    if (event.data.type === "logout") renderAuth("Logged out in another tab.");
    else if (event.data.type === "login" && !document.getElementById("chat")) void startChat().catch(notify);
    else if (event.data.type === "changed" && document.getElementById("chat")) void loadConversations().catch(() => undefined);
  });
  if (!api.signedIn) return renderAuth();
  try {
    await startChat();
  } catch (e) {
    renderAuth(e instanceof ApiError && e.status === 401 ? "" : describe(e).text);
  }
}

void boot();
