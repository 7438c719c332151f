/**
 * A server-sent events reader (WHATWG HTML §9.2.6, the event stream interpretation) that hands
 * the `data` of each event to a JsonCapture as the bytes pass, without keeping lines or events:
 * the stream goes on to the client unchanged while usage is read from it.
 *
 * Lines end with CRLF, LF or CR; a `data:` field's value (one leading space removed) is fed to
 * the capture, several `data` lines of one event joined by LF; an empty line ends the event.
 * Other fields (`event`, `id`, `retry`) and comments are skipped.
 */
import type { JsonCapture } from './json-scan.ts';

const CR = 13, LF = 10, SP = 32;
const DATA = Buffer.from('data:');
const NEWLINE = Buffer.from('\n');
/** field state: matching `data:`, reading its value, skipping the line */
const F_MATCH = 0, F_DATA = 1, F_SKIP = 2;

export class SseReader {
  private readonly capture: JsonCapture;
  private readonly onEvent: (capture: JsonCapture, dataBytes: number) => void;
  private field = F_MATCH;
  /** bytes of `data:` matched on this line */
  private matched = 0;
  /** at the first byte of a data value (an optional space is dropped) */
  private valueStart = false;
  private lineEmpty = true;
  private afterCR = false;
  /** data lines and bytes of the event being read */
  private dataLines = 0;
  private dataBytes = 0;
  /** events that carried data */
  events = 0;

  constructor(capture: JsonCapture, onEvent: (capture: JsonCapture, dataBytes: number) => void) {
    this.capture = capture;
    this.onEvent = onEvent;
  }

  feed(buf: Buffer, start: number, end: number): void {
    let from = -1; // start of a run of data value bytes in this piece
    for (let i = start; i < end; i++) {
      const b = buf[i]!;
      if (this.afterCR) {
        this.afterCR = false;
        if (b === LF) continue;
      }
      if (b === CR || b === LF) {
        if (from >= 0) { this.data(buf, from, i); from = -1; }
        if (b === CR) this.afterCR = true;
        this.lineEnd();
        continue;
      }
      this.lineEmpty = false;
      if (this.field === F_DATA) {
        if (this.valueStart) {
          this.valueStart = false;
          if (b === SP) continue;
        }
        if (from < 0) from = i;
        continue;
      }
      if (this.field === F_MATCH) {
        if (b === DATA[this.matched]) {
          if (++this.matched === DATA.length) {
            this.field = F_DATA;
            this.valueStart = true;
            if (this.dataLines++ > 0) this.data(NEWLINE, 0, 1);
          }
        } else this.field = F_SKIP;
      }
    }
    if (from >= 0) this.data(buf, from, end);
  }

  private data(buf: Buffer, from: number, to: number): void {
    this.dataBytes += to - from;
    this.capture.feed(buf, from, to);
  }

  private lineEnd(): void {
    if (this.lineEmpty) {
      if (this.dataLines > 0) {
        this.events++;
        this.onEvent(this.capture, this.dataBytes);
      }
      this.capture.reset();
      this.dataLines = 0;
      this.dataBytes = 0;
    }
    this.field = F_MATCH;
    this.matched = 0;
    this.valueStart = false;
    this.lineEmpty = true;
  }

  /** The stream ended: an event without its final empty line is dispatched (as browsers do not; usage may sit there). */
  finish(): void {
    if (!this.lineEmpty) this.lineEnd();
    if (this.dataLines > 0) this.lineEnd();
  }
}
