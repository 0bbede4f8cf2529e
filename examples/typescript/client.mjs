#!/usr/bin/env node
// @ts-check
// A longform-worker client for Node 20, with nothing beyond the standard library (fetch and the
// SSE parser in ./sse.mjs). It submits a job, follows its events, reconnects after a dropped
// connection with Last-Event-ID and exponential backoff, checks the final state, and prints the
// document on stdout (progress goes to stderr).
//
//   LONGFORM_URL=http://127.0.0.1:8080 LONGFORM_TOKEN=... node client.mjs "Write about tides." [--id ID]
//
// Options: --id ID (default: derived by the server), --model MODEL, --drop-after N (abort the
// first connection after N text events, to see a resume), --max-reconnects N (default 20).
//
// Written as JavaScript with JSDoc types and `// @ts-check`, so TypeScript checks it
// (`tsc --noEmit --checkJs --target es2022 --module nodenext *.mjs`) while Node 20, which cannot
// run .ts files, runs it with no build step.

import { parseEventStream } from "./sse.mjs";

/** @typedef {{ id: string, state: string, text_length: number, error: string | null }} Job */

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

/** @param {string[]} argv */
function parseArgs(argv) {
  /** @type {{ prompt: string, id?: string, model?: string, dropAfter: number, maxReconnects: number }} */
  const options = { prompt: "", dropAfter: 0, maxReconnects: 20 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--id") options.id = argv[++i];
    else if (arg === "--model") options.model = argv[++i];
    else if (arg === "--drop-after") options.dropAfter = Number(argv[++i]);
    else if (arg === "--max-reconnects") options.maxReconnects = Number(argv[++i]);
    else options.prompt = arg;
  }
  if (!options.prompt) throw new Error('usage: node client.mjs "PROMPT" [--id ID] [--model M] [--drop-after N]');
  return options;
}

class Api {
  /** @param {string} base @param {string} token */
  constructor(base, token) {
    this.base = base.replace(/\/$/, "");
    this.headers = { Authorization: `Bearer ${token}` };
  }

  /** @param {string} path @param {RequestInit} [init] */
  async json(path, init = {}) {
    const response = await fetch(this.base + path, {
      ...init,
      headers: { ...this.headers, "Content-Type": "application/json", ...(init.headers ?? {}) },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`${init.method ?? "GET"} ${path}: ${response.status} ${body.error}`);
    return body;
  }

  /** @param {Record<string, unknown>} job @returns {Promise<Job>} */
  submit(job) {
    return this.json("/v1/jobs", { method: "POST", body: JSON.stringify(job) });
  }

  /** @param {string} id @returns {Promise<Job>} */
  job(id) {
    return this.json(`/v1/jobs/${encodeURIComponent(id)}`);
  }
}

/**
 * Follow a job's events until `done`, reconnecting with Last-Event-ID and backoff.
 * @param {Api} api @param {string} id @param {{ dropAfter: number, maxReconnects: number }} options
 * @returns {Promise<{ text: string, chars: number, state: string, reconnects: number }>}
 */
async function follow(api, id, options) {
  let text = "";
  // Offsets count Unicode code points (Python's str), not UTF-16 units (JavaScript's length).
  let chars = 0;
  let lastEventId = "0";
  let retryMs = 1000;
  let reconnects = 0;
  let drop = options.dropAfter;
  for (;;) {
    const abort = new AbortController();
    let texts = 0;
    try {
      const headers = { ...api.headers, Accept: "text/event-stream", "Last-Event-ID": lastEventId };
      const response = await fetch(`${api.base}/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers,
        signal: abort.signal,
      });
      if (response.status === 204) throw new Error("the server asked us to stop reconnecting");
      if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
      for await (const item of parseEventStream(/** @type {AsyncIterable<Uint8Array>} */ (response.body))) {
        if (item.kind === "retry") retryMs = item.ms;
        if (item.kind !== "event") continue;
        const { event, data, id: eventId } = item.message;
        const payload = JSON.parse(data);
        if (event === "text") {
          if (payload.offset !== chars) throw new Error(`offset ${payload.offset}, expected ${chars}`);
          text += payload.text;
          chars += codePoints(payload.text);
          if (eventId !== null) lastEventId = eventId;
          texts++;
          if (drop > 0 && texts === drop) {
            drop = 0;
            console.error(`dropping the connection after ${texts} text events (--drop-after)`);
            abort.abort();
          }
        } else if (event === "state") {
          console.error(`state: ${payload.state}${payload.reason ? ` (${payload.reason})` : ""}`);
        } else if (event === "done") {
          return { text, chars, state: payload.state, reconnects };
        }
      }
      console.error("the stream ended before done");
    } catch (error) {
      if (!abort.signal.aborted) console.error(`connection lost: ${/** @type {Error} */ (error).message}`);
    }
    reconnects++;
    if (reconnects > options.maxReconnects) throw new Error(`gave up after ${options.maxReconnects} reconnects`);
    const delay = Math.min(30_000, retryMs * 2 ** Math.min(reconnects - 1, 5)) * (0.5 + Math.random() / 2);
    console.error(`reconnecting with Last-Event-ID: ${lastEventId} in ${Math.round(delay)} ms`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/** @param {string} text */
function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const base = process.env.LONGFORM_URL ?? "http://127.0.0.1:8080";
  const token = process.env.LONGFORM_TOKEN;
  if (!token) throw new Error("set LONGFORM_TOKEN (the server prints a generated one at first start)");
  const api = new Api(base, token);
  /** @type {Record<string, unknown>} */
  const spec = { prompt: options.prompt };
  if (options.id) spec.id = options.id;
  if (options.model) spec.model = options.model;
  const job = await api.submit(spec);
  console.error(`job ${job.id}: ${job.state}`);
  const { text, chars, state, reconnects } = await follow(api, job.id, options);
  const final = await api.job(job.id);
  if (state !== "succeeded" || final.state !== "succeeded") throw new Error(`job ${job.id} ended ${final.state}: ${final.error}`);
  if (final.text_length !== chars) throw new Error(`received ${chars} characters, the job has ${final.text_length}`);
  console.error(`job ${job.id} succeeded: ${chars} characters, ${reconnects} reconnect(s)`);
  process.stdout.write(text);
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
