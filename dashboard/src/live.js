// The live socket: @azure/web-pubsub-client with the plain JSON subprotocol.
//
// The client reconnects by itself; every (re)connect calls getClientAccessUrl, so each one
// negotiates a fresh receive-only token (tokens expire within the hour). With the plain
// protocol nothing sent while the socket was down is replayed: `onConnected` tells the
// page to back-fill from REST.

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30000;

export class Live {
  constructor({ api, onMessage, onConnected, onState }) {
    this.onMessage = onMessage;
    this.onConnected = onConnected;
    this.onState = onState;
    this.failures = 0;
    this.client = new WebPubSubClient(
      { getClientAccessUrl: () => api.negotiate() },
      {
        protocol: WebPubSubJsonProtocol(),
        autoReconnect: true,
        reconnectRetryOptions: {
          maxRetries: 1e9,
          retryDelayInMs: RESTART_MIN_MS,
          maxRetryDelayInMs: 10000,
          mode: "Exponential",
        },
      },
    );
    this.client.on("connected", () => {
      this.failures = 0;
      this.onConnected();
    });
    this.client.on("disconnected", () => this.onState("reconnecting"));
    this.client.on("stopped", () => this.later());
    this.client.on("server-message", (e) => this.onMessage(e.message && e.message.data));
  }

  start() {
    this.onState(this.failures ? "offline" : "connecting");
    this.client.start().catch(() => this.later());
  }

  /** The client gave up (or never connected): show offline, try again with growing delays. */
  later() {
    this.failures += 1;
    this.onState("offline");
    const ceiling = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** Math.min(this.failures, 10));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), ceiling / 2 + Math.random() * (ceiling / 2));
  }
}
