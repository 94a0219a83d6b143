// The runtime's HTTP API: JSON calls with the bearer token, a refresh on 401, and errors as ApiError.
//
// Tokens: the access token lives in memory only (15 minutes); the refresh token in localStorage, so a reload or a
// new tab of the same browser stays signed in (the sync across tabs needs that). The page has a strict CSP and
// sanitizes everything it renders, which is what keeps script (and so the stored token) out of reach.

const REFRESH_KEY = "gpt.refresh_token";

export interface ErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly retryAfterS: number | null;

  constructor(status: number, body: Partial<ErrorBody>, retryAfterS: number | null = null) {
    super(body.message || `request failed (${status})`);
    this.status = status;
    this.type = body.type || "api_error";
    this.code = body.code ?? null;
    this.retryAfterS = retryAfterS;
  }

  /** A rate limit or an exhausted quota (HTTP 429 or a WebSocket error frame of those types). */
  get isLimit(): boolean {
    return this.status === 429 || ["requests", "tokens", "insufficient_quota", "rate_limit_error"].includes(this.type);
  }
}

export interface User {
  id: string;
  email: string;
  role: string;
  email_verified: boolean;
  created_at: string;
}

export interface Conversation {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
  message_count: number;
}

export interface Message {
  id: string;
  role: string;
  content: string;
  tokens: number | null;
  finish_reason: string | null;
  created_at: string;
}

export interface ConversationDetail extends Conversation {
  messages: Message[];
}

export interface Page {
  items: Conversation[];
  next_cursor: string | null;
}

export interface SearchResult {
  conversation_id: string;
  title: string;
  score: number;
  snippet: string;
}

export interface FileInfo {
  id: string;
  filename: string | null;
  content_type: string;
  bytes: number;
  conversation_id: string | null;
}

export interface Usage {
  period: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  estimated_cost_usd: number;
  tier: string;
  limits: { requests_per_minute: number; quota: { rpm: number; rpd: number; tpm: number; tpd: number } };
}

export interface Voice {
  id: string;
  name: string;
  language: string;
}

async function errorOf(response: Response): Promise<ApiError> {
  let body: Partial<ErrorBody> = {};
  try {
    const parsed: unknown = await response.json();
    if (parsed && typeof parsed === "object" && "error" in parsed) body = (parsed as { error: ErrorBody }).error;
  } catch {
    body = { message: `${response.status} ${response.statusText}` };
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, body, Number.isFinite(retry) && retry > 0 ? retry : null);
}

export class Api {
  private accessToken: string | null = null;
  private refreshing: Promise<boolean> | null = null;
  /** The last X-RateLimit-Remaining / -Limit seen, for the usage panel. */
  rate: { remaining: number; limit: number } | null = null;
  /** Called when the session ends (refresh refused): the page shows the sign-in form. */
  onSignedOut: () => void = () => {};

  get signedIn(): boolean {
    return this.accessToken !== null || localStorage.getItem(REFRESH_KEY) !== null;
  }

  get token(): string | null {
    return this.accessToken;
  }

  async login(email: string, password: string): Promise<void> {
    const pair = await this.json<{ access_token: string; refresh_token: string }>("POST", "/auth/login", {
      body: { email, password },
      auth: false,
    });
    this.accessToken = pair.access_token;
    localStorage.setItem(REFRESH_KEY, pair.refresh_token);
  }

  async signup(email: string, password: string): Promise<void> {
    await this.json("POST", "/auth/signup", { body: { email, password }, auth: false });
    await this.login(email, password);
  }

  /** Forget the tokens (the API has no server-side logout: the refresh token expires on its own). */
  logout(): void {
    this.accessToken = null;
    localStorage.removeItem(REFRESH_KEY);
  }

  /** A fresh access token from the refresh token; false when there is none or it is refused. */
  refresh(): Promise<boolean> {
    this.refreshing ??= (async () => {
      const refreshToken = localStorage.getItem(REFRESH_KEY);
      if (!refreshToken) return false;
      const response = await fetch("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
      if (response.status === 401) {
        this.logout();
        this.onSignedOut();
        return false;
      }
      if (!response.ok) throw await errorOf(response);
      const pair = (await response.json()) as { access_token: string; refresh_token: string };
      this.accessToken = pair.access_token;
      localStorage.setItem(REFRESH_KEY, pair.refresh_token);
      return true;
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** fetch with the bearer token; one refresh and retry on a 401. Errors (4xx, 5xx) throw ApiError. */
  async fetch(method: string, path: string, init: { body?: BodyInit; headers?: Record<string, string>; auth?: boolean } = {}): Promise<Response> {
    const auth = init.auth ?? true;
    if (auth && this.accessToken === null && !(await this.refresh())) throw new ApiError(401, { message: "signed out" });
    const send = () =>
      fetch(path, {
        method,
        body: init.body ?? null,
        headers: { ...(init.headers ?? {}), ...(auth && this.accessToken ? { Authorization: `Bearer ${this.accessToken}` } : {}) },
      });
    let response = await send();
    if (auth && response.status === 401 && (await this.refresh())) response = await send();
    const remaining = response.headers.get("X-RateLimit-Remaining");
    const limit = response.headers.get("X-RateLimit-Limit");
    if (remaining !== null && limit !== null) this.rate = { remaining: Number(remaining), limit: Number(limit) };
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json<T>(method: string, path: string, init: { body?: unknown; auth?: boolean } = {}): Promise<T> {
    const hasBody = init.body !== undefined;
    const response = await this.fetch(method, path, {
      body: hasBody ? JSON.stringify(init.body) : undefined,
      headers: hasBody ? { "Content-Type": "application/json" } : {},
      auth: init.auth ?? true,
    });
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  me(): Promise<User> {
    return this.json("GET", "/auth/me");
  }

  listConversations(params: { updatedSince?: string; cursor?: string; limit?: number } = {}): Promise<Page> {
    const query = new URLSearchParams({ limit: String(params.limit ?? 100) });
    if (params.updatedSince) query.set("updated_since", params.updatedSince);
    if (params.cursor) query.set("cursor", params.cursor);
    return this.json("GET", `/conversations?${query}`);
  }

  conversation(id: string): Promise<ConversationDetail> {
    return this.json("GET", `/conversations/${encodeURIComponent(id)}`);
  }

  createConversation(title?: string): Promise<Conversation> {
    return this.json("POST", "/conversations", { body: title ? { title } : {} });
  }

  rename(id: string, title: string): Promise<Conversation> {
    return this.json("PUT", `/conversations/${encodeURIComponent(id)}/title`, { body: { title } });
  }

  remove(id: string): Promise<void> {
    return this.json("DELETE", `/conversations/${encodeURIComponent(id)}`);
  }

  /** Full-text search on the server; null when this server has no search route (filter titles instead). */
  async search(q: string): Promise<SearchResult[] | null> {
    try {
      const out = await this.json<{ results: SearchResult[] }>(
        "GET",
        `/conversations/search?${new URLSearchParams({ q, limit: "20" })}`,
      );
      return Array.isArray(out.results) ? out.results : null;
    } catch (error) {
      // an older server routes /conversations/search to GET /conversations/{id} ("search" is no id): 404
      if (error instanceof ApiError && [404, 405, 501].includes(error.status)) return null;
      throw error;
    }
  }

  async exportBlob(id: string, format: "json" | "pdf"): Promise<Blob> {
    const response = await this.fetch("GET", `/conversations/${encodeURIComponent(id)}/export?format=${format}`);
    return response.blob();
  }

  upload(file: Blob, filename: string, conversationId: string | null): Promise<FileInfo> {
    const form = new FormData();
    form.append("file", file, filename);
    if (conversationId) form.append("conversation_id", conversationId);
    return this.fetch("POST", "/upload", { body: form }).then((r) => r.json() as Promise<FileInfo>);
  }

  async fileBlob(id: string): Promise<Blob> {
    return (await this.fetch("GET", `/files/${encodeURIComponent(id)}`)).blob();
  }

  usage(): Promise<Usage> {
    return this.json("GET", "/usage");
  }

  async models(): Promise<string[]> {
    const out = await this.json<{ data: { id: string }[] }>("GET", "/v1/models");
    return out.data.map((m) => m.id);
  }

  /** The voices, or null when this server has no voice endpoints (404, 501). */
  async voices(): Promise<Voice[] | null> {
    try {
      const out = await this.json<{ voices: Voice[] }>("GET", "/voices");
      return Array.isArray(out.voices) ? out.voices : null;
    } catch (error) {
      if (error instanceof ApiError && [404, 405, 501, 503].includes(error.status)) return null;
      throw error;
    }
  }

  async synthesize(text: string, voice: string | null): Promise<Blob> {
    const body = voice ? { text, voice, format: "wav" } : { text, format: "wav" };
    const response = await this.fetch("POST", "/synthesize", {
      body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" },
    });
    return response.blob();
  }

  async transcribe(wav: Blob): Promise<string> {
    const form = new FormData();
    form.append("file", wav, "speech.wav");
    const out = (await (await this.fetch("POST", "/transcribe", { body: form })).json()) as { text: string };
    return out.text;
  }
}
