/**
 * A server-sent events reader (WHATWG HTML §9.2.6, the event stream interpretation) that hands
 * the `data` of each event to a document reader as the bytes pass: the stream goes on to the
 * client unchanged while usage is read from it. Line ends are found with Buffer#indexOf (native),
 * only line starts are looked at byte by byte.
 *
 * Lines end with CRLF, LF or CR; a `data:` field's value (one leading space removed) goes to the
 * reader, several `data` lines of one event joined by LF; an empty line ends the event. Other
 * fields (`event`, `id`, `retry`) and comments are skipped.
 */

const CR = 13, LF = 10, SP = 32;
const DATA = Buffer.from('data:');
const NEWLINE = Buffer.from('\n');
/** line state: matching `data:` at the line start, reading a data value, skipping the line */
const F_MATCH = 0, F_DATA = 1, F_SKIP = 2;

/** What receives each event's data (usage.ts: DocReader). */
export interface EventSink {
  data(buf: Buffer, start: number, end: number): void;
  /** the event ended (it had data) */
  event(): void;
}

export class SseReader {
  private readonly sink: EventSink;
  private field = F_MATCH;
  /** bytes of `data:` matched on this line */
  private matched = 0;
  /** at the first byte of a data value (an optional space is dropped) */
  private valueStart = false;
  private lineEmpty = true;
  private afterCR = false;
  /** data lines of the event being read */
  private dataLines = 0;
  /** events that carried data */
  events = 0;

  constructor(sink: EventSink) {
    this.sink = sink;
  }

  feed(buf: Buffer, start: number, end: number): void {
    let i = start;
    while (i < end) {
      if (this.afterCR) {
        this.afterCR = false;
        if (buf[i] === LF) { i++; continue; }
      }
      if (this.field === F_MATCH) {
        const b = buf[i]!;
        if (b === CR || b === LF) { this.lineEnd(b); i++; continue; }
        this.lineEmpty = false;
        if (b === DATA[this.matched]) {
          if (++this.matched === DATA.length) {
            this.field = F_DATA;
            this.valueStart = true;
            if (this.dataLines++ > 0) this.sink.data(NEWLINE, 0, 1);
          }
        } else this.field = F_SKIP;
        i++;
        continue;
      }
      // the rest of the line: a data value, or skipped
      if (this.valueStart) {
        this.valueStart = false;
        if (buf[i] === SP) { i++; continue; }
      }
      let eol = buf.indexOf(LF, i);
      if (eol < 0 || eol >= end) eol = end;
      const cr = buf.indexOf(CR, i);
      if (cr >= 0 && cr < eol) eol = cr;
      if (this.field === F_DATA && eol > i) this.sink.data(buf, i, eol);
      if (eol === end) return;
      this.lineEnd(buf[eol]!);
      i = eol + 1;
    }
  }

  private lineEnd(b: number): void {
    if (b === CR) this.afterCR = true;
    if (this.lineEmpty) {
      if (this.dataLines > 0) {
        this.events++;
        this.sink.event();
      }
      this.dataLines = 0;
    }
    this.field = F_MATCH;
    this.matched = 0;
    this.valueStart = false;
    this.lineEmpty = true;
  }

  /** The stream ended: an event without its final empty line still counts (usage may sit there). */
  finish(): void {
    if (!this.lineEmpty) this.lineEnd(LF);
    if (this.dataLines > 0) this.lineEnd(LF);
  }
}
