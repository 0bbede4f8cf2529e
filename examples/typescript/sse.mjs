// @ts-check
// A small Server-Sent Events parser (WHATWG HTML, "event stream interpretation"), for fetch():
// EventSource cannot send an Authorization header, so Node and browser code that needs one reads
// the stream with fetch and parses it here. No dependencies.

/**
 * @typedef {{ event: string, data: string, id: string | null }} SSEMessage
 * @typedef {{ kind: "event", message: SSEMessage } | { kind: "comment", text: string } | { kind: "retry", ms: number }} SSEItem
 */

/**
 * Parse an event stream (bytes) into events, comments and retry hints, in order.
 * @param {AsyncIterable<Uint8Array>} body
 * @returns {AsyncGenerator<SSEItem>}
 */
export async function* parseEventStream(body) {
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  let event = "";
  /** @type {string[]} */
  let data = [];
  /** @type {string | null} */
  let id = null;
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    // Lines end with CRLF, LF or CR. A CR at the very end may be half of a CRLF: wait for more.
    while ((end = lineEnd(buffer)) !== -1) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(buffer[end] === "\r" && buffer[end + 1] === "\n" ? end + 2 : end + 1);
      if (line === "") {
        if (data.length > 0) {
          yield { kind: "event", message: { event: event || "message", data: data.join("\n"), id } };
        }
        event = "";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) {
        yield { kind: "comment", text: line.slice(1).trim() };
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^\d+$/.test(value)) yield { kind: "retry", ms: Number(value) };
    }
  }
}

/** @param {string} text */
function lineEnd(text) {
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") return i;
    if (c === "\r") return i + 1 < text.length ? i : -1;
  }
  return -1;
}
