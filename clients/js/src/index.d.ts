// Type declarations for switchyard-client (src/index.js).

/** A position in a history channel's stream. */
export interface Position {
  offset: number;
  epoch: string;
}

export interface ClientOptions {
  /** A JWT for `?token=`; anonymous without one. */
  token?: string;
  /**
   * Returns a fresh token. Called before the first connection when no `token` is given,
   * after the broker closed with 4003 (token expired), and before connecting when the
   * current token's `exp` has passed. Without it, an expired token stops the client.
   */
  getToken?: () => string | Promise<string>;
  /** Ask for `?batch=1`: several objects per frame. Default false. */
  batch?: boolean;
  /** A WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** ms for every request's answer. Default 10000. */
  requestTimeout?: number;
  /** ms from opening a socket to the broker's `welcome`. Default 10000. */
  connectTimeout?: number;
  /** ms between heartbeat pings while connected; 0: none. Default 25000. */
  pingInterval?: number;
  /** ms: cap of the first reconnect delay. Default 500. */
  minReconnectDelay?: number;
  /** ms: largest reconnect delay. Default 20000. */
  maxReconnectDelay?: number;
  /** Random source in [0, 1) for the backoff jitter (tests). Default Math.random. */
  random?: () => number;
}

/** The part of the WebSocket interface the client uses. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export class SwitchyardError extends Error {
  constructor(code: string, message?: string, details?: object);
  /**
   * The broker's error code (`bad_request`, `invalid_channel`, `no_route`, `forbidden`,
   * `too_large`, `rate_limited`, `unavailable`, `not_found`) or the client's own:
   * `timeout`, `disconnected`, `closed`, `token_expired`, `token_refresh_failed`,
   * `already_subscribed`, `unsubscribed`, `bad_url`, `bad_frame`.
   */
  code: string;
  /** The close code, when the error is about a close. */
  closeCode?: number;
  /** The broker's error frame, when there was one. */
  frame?: object;
}

export interface MessageFrame<T = unknown> {
  op: "message";
  channel: string;
  data: T;
  /** The publisher's verified identity (its token's `sub`); absent for anonymous ones. */
  user?: string;
  /** On history channels. */
  offset?: number;
  epoch?: string;
}

export interface Member {
  conn: string;
  user?: string;
}

export interface PresenceDiff {
  op: "presence_diff";
  channel: string;
  join: Member[];
  leave: Member[];
}

export interface PresencePage {
  op: "presence";
  channel: string;
  connections: number;
  users: number;
  /** Absent with `members: false`. */
  members?: Member[];
  /** Present while more pages remain. */
  next_cursor?: string;
}

export interface HistoryAnswer<T = unknown> {
  op: "history";
  channel: string;
  offset: number;
  epoch: string;
  messages: { offset: number; data: T; user?: string }[];
}

export interface SubscribedInfo {
  /** The top of the stream when the subscription took effect (history channels). */
  offset?: number;
  epoch?: string;
  /**
   * true: everything since the previous subscription is (being) replayed; false: some may be
   * missing, reload the channel's state; null: a first subscription without `since`.
   */
  recovered: boolean | null;
  /** true after a reconnect (or a re-subscription the broker asked for). */
  resubscribed: boolean;
}

export interface SubscribeOptions<T = unknown> {
  onMessage?: (message: MessageFrame<T>) => void;
  /** `presence_diff` frames (routes with `join_leave = true`). */
  onPresence?: (diff: PresenceDiff) => void;
  /** After each acknowledged (re)subscription. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /** The subscription ended without `unsubscribe()`: refused, or taken away by the broker. */
  onUnsubscribed?: (info: { reason: string; error: SwitchyardError }) => void;
  /** Resume from a stored position (e.g. kept across page loads). */
  since?: Position;
}

export class Subscription<T = unknown> {
  readonly client: Client;
  readonly channel: string;
  /** The last position seen (history channels), or null. */
  readonly position: Position | null;
  /** See SubscribedInfo.recovered. */
  readonly recovered: boolean | null;
  /** True once the subscription has ended for good. */
  readonly closed: boolean;
  /**
   * The current (re)subscription's acknowledgement. Replaced by a fresh promise when the
   * connection drops; rejects if the subscription ends instead.
   */
  readonly ready: Promise<SubscribedInfo>;
  history(options?: { limit?: number; since?: number }): Promise<HistoryAnswer<T>>;
  presence(options?: { limit?: number; cursor?: string; members?: boolean }): Promise<PresencePage>;
  presenceMembers(options?: { pageSize?: number }): AsyncGenerator<Member>;
  unsubscribe(): Promise<void>;
}

export interface ClientEvents {
  connected: { conn: string; node: string; url: string };
  disconnected: { code: number; reason: string; willReconnect: boolean; error?: SwitchyardError };
  reconnecting: { attempt: number; delay: number; url: string };
  direct: { from: string; data: unknown; user?: string };
  error: SwitchyardError;
}

export type ClientState = "connecting" | "connected" | "reconnecting" | "closed";

export class Client {
  constructor(urls: string | string[], options?: ClientOptions);
  readonly state: ClientState;
  /** The current connection id and node, set by each `welcome`. */
  readonly conn: string | null;
  readonly node: string | null;
  on<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): void;
  whenConnected(): Promise<{ conn: string; node: string; url?: string }>;
  subscribe<T = unknown>(channel: string, options?: SubscribeOptions<T>): Subscription<T>;
  /** `{offset, epoch}` on history channels, `{}` otherwise. Rejects at once when not connected. */
  publish(channel: string, data: unknown): Promise<Partial<Position>>;
  send(to: string, data: unknown): Promise<void>;
  history<T = unknown>(channel: string, options?: { limit?: number; since?: number }): Promise<HistoryAnswer<T>>;
  presence(channel: string, options?: { limit?: number; cursor?: string; members?: boolean }): Promise<PresencePage>;
  presenceMembers(channel: string, options?: { pageSize?: number }): AsyncGenerator<Member>;
  /** Round trip in ms. */
  ping(): Promise<number>;
  close(): void;
}

/** The reconnect delay for attempt `attempt` (0-based): full jitter under the cap. */
export function backoffDelay(
  attempt: number,
  options: { minReconnectDelay: number; maxReconnectDelay: number; random?: () => number },
): number;
