/**
 * Filter chains for the L7 proxies, in the manner of Envoy's: each filter sees an event and
 * answers `continue` (the next filter runs) or `stop` (the chain ends here; the filter has taken
 * over: answered locally, closed, or switched the connection to another parser).
 *
 *   network filters  onNewConnection(conn) / onData(conn, chunk): connection level, before any
 *                    HTTP parsing (a TLS interception filter terminates TLS here and feeds the
 *                    plaintext on; an SNI filter resets the connection)
 *   http filters     decodeHeaders(stream) per request head, encodeHeaders(stream) per response
 *                    head (the L7 policy filter answers 403 and stops; header rewriting continues);
 *                    decodeBody(stream, body) once the whole request body is in, for requests a
 *                    filter asked to hold (the AI filter judges the model; nothing of the request
 *                    went upstream before it)
 *
 * The chain is a plain array walked in order: no allocation per event.
 */

export type FilterStatus = 'continue' | 'stop';

export interface NetworkFilter<C> {
  readonly name: string;
  /** once per accepted connection, before any byte is read */
  onNewConnection?(conn: C): FilterStatus;
  /** each chunk from the downstream client, before the HTTP parser */
  onData?(conn: C, chunk: Buffer): FilterStatus;
}

export interface HttpFilter<S> {
  readonly name: string;
  /** a complete request head has been parsed (the body has not been forwarded yet) */
  decodeHeaders?(stream: S): FilterStatus;
  /**
   * The request body (payload, chunked framing removed), when a filter asked in decodeHeaders to
   * hold it; `null` when it was larger than asked (the filter should answer locally, e.g. 413).
   */
  decodeBody?(stream: S, body: Buffer | null): FilterStatus;
  /** a complete response head has arrived from upstream (or a local reply is being sent) */
  encodeHeaders?(stream: S): FilterStatus;
}

export class FilterChain<C, S> {
  readonly network: NetworkFilter<C>[] = [];
  readonly http: HttpFilter<S>[] = [];

  addNetwork(f: NetworkFilter<C>): this {
    this.network.push(f);
    return this;
  }

  addHttp(f: HttpFilter<S>): this {
    this.http.push(f);
    return this;
  }

  /** Runs onNewConnection; `stop` if some filter stopped. */
  newConnection(conn: C): FilterStatus {
    for (let i = 0; i < this.network.length; i++) {
      const f = this.network[i]!;
      if (f.onNewConnection && f.onNewConnection(conn) === 'stop') return 'stop';
    }
    return 'continue';
  }

  data(conn: C, chunk: Buffer): FilterStatus {
    for (let i = 0; i < this.network.length; i++) {
      const f = this.network[i]!;
      if (f.onData && f.onData(conn, chunk) === 'stop') return 'stop';
    }
    return 'continue';
  }

  decodeHeaders(stream: S): FilterStatus {
    for (let i = 0; i < this.http.length; i++) {
      const f = this.http[i]!;
      if (f.decodeHeaders && f.decodeHeaders(stream) === 'stop') return 'stop';
    }
    return 'continue';
  }

  decodeBody(stream: S, body: Buffer | null): FilterStatus {
    for (let i = 0; i < this.http.length; i++) {
      const f = this.http[i]!;
      if (f.decodeBody && f.decodeBody(stream, body) === 'stop') return 'stop';
    }
    return 'continue';
  }

  encodeHeaders(stream: S): FilterStatus {
    for (let i = 0; i < this.http.length; i++) {
      const f = this.http[i]!;
      if (f.encodeHeaders && f.encodeHeaders(stream) === 'stop') return 'stop';
    }
    return 'continue';
  }
}
