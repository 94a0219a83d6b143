// WS /ws/generate: one socket per page, several generations on it, each answered by request_id.

import { ApiError, type Api, type ErrorBody } from "./api";

export interface Done {
  conversation_id: string | null;
  message_id: string | null;
  finish_reason: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}

interface Handlers {
  delta: (text: string) => void;
  done: (done: Done) => void;
  error: (error: ApiError) => void;
}

const RATE_LIMITED = 4429;
const POLICY_VIOLATION = 1008;

export class GenerationSocket {
  private socket: WebSocket | null = null;
  private opening: Promise<WebSocket> | null = null;
  private readonly pending = new Map<string, Handlers>();
  private counter = 0;

  constructor(private readonly api: Api) {}

  /** Start a generation; the handlers get its deltas, then done or error. Answers its request id. */
  async generate(content: string, conversationId: string | null, handlers: Handlers): Promise<string> {
    const socket = await this.open();
    const requestId = `web-${Date.now().toString(36)}-${(this.counter++).toString(36)}`;
    this.pending.set(requestId, handlers);
    socket.send(JSON.stringify({ type: "generate", request_id: requestId, conversation_id: conversationId, content }));
    return requestId;
  }

  cancel(requestId: string): void {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "cancel", request_id: requestId }));
    }
  }

  close(): void {
    this.socket?.close(1000, "signed out");
    this.socket = null;
  }

  private open(retry = true): Promise<WebSocket> {
    if (this.socket?.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    this.opening ??= this.connect(retry).finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async connect(retry: boolean): Promise<WebSocket> {
    if (!this.api.token && !(await this.api.refresh())) throw new ApiError(401, { message: "signed out" });
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // a browser WebSocket cannot send headers: the token goes in the query (the server's logs redact it)
    const url = `${scheme}//${location.host}/ws/generate?access_token=${encodeURIComponent(this.api.token ?? "")}`;
    const socket = new WebSocket(url);
    const opened = await new Promise<{ ok: true } | { ok: false; code: number; reason: string }>((resolve) => {
      socket.onopen = () => {
        // the server closes right after accepting when the token or the rate limit refuses us
        const settle = setTimeout(() => resolve({ ok: true }), 150);
        socket.onclose = (event) => {
          clearTimeout(settle);
          resolve({ ok: false, code: event.code, reason: event.reason });
        };
      };
      socket.onerror = () => undefined;
      socket.onclose = (event) => resolve({ ok: false, code: event.code, reason: event.reason });
    });
    if (!opened.ok) {
      if (opened.code === POLICY_VIOLATION && retry && (await this.api.refresh())) return this.connect(false);
      throw closeError(opened.code, opened.reason);
    }
    socket.onmessage = (event) => this.receive(String(event.data));
    socket.onclose = (event) => {
      if (this.socket === socket) this.socket = null;
      const error = closeError(event.code, event.reason);
      for (const handlers of this.pending.values()) handlers.error(error);
      this.pending.clear();
    };
    this.socket = socket;
    return socket;
  }

  private receive(raw: string): void {
    const frame = JSON.parse(raw) as {
      type: string;
      request_id: string | null;
      content?: string;
      error?: ErrorBody;
    } & Partial<Done>;
    const handlers = frame.request_id ? this.pending.get(frame.request_id) : undefined;
    if (!handlers) return;
    if (frame.type === "delta") {
      handlers.delta(frame.content ?? "");
    } else if (frame.type === "done") {
      this.pending.delete(frame.request_id as string);
      handlers.done({
        conversation_id: frame.conversation_id ?? null,
        message_id: frame.message_id ?? null,
        finish_reason: frame.finish_reason ?? "stop",
        usage: frame.usage ?? null,
      });
    } else if (frame.type === "error") {
      this.pending.delete(frame.request_id as string);
      const error = frame.error ?? { message: "generation failed", type: "api_error", param: null, code: null };
      const retry = /retry in (\d+)s/.exec(error.message);
      const limited = ["requests", "tokens", "insufficient_quota"].includes(error.type);
      handlers.error(new ApiError(limited ? 429 : 400, error, retry ? Number(retry[1]) : null));
    }
  }
}

function closeError(code: number, reason: string): ApiError {
  if (code === RATE_LIMITED) {
    const retry = /retry in (\d+)s/.exec(reason);
    return new ApiError(429, { message: reason || "rate limited", type: "requests" }, retry ? Number(retry[1]) : null);
  }
  if (code === POLICY_VIOLATION) return new ApiError(401, { message: "the session expired: sign in again" });
  return new ApiError(503, { message: `the connection closed (${code}${reason ? `: ${reason}` : ""})`, type: "overloaded" });
}
