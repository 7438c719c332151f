/**
 * `--since` / `--until` as the hubble CLI reads them (hubble/pkg/time FromString): first a Go
 * duration before now (`3s`, `1h43m`, `1.5h`, `-2m` is two minutes ahead), else the first of
 * these Go layouts that parses, in this order: YearMonthDay `2006-01-02`, YearMonthDayHour
 * `2006-01-02T15Z07:00`, YearMonthDayHourMinute `2006-01-02T15:04Z07:00`, RFC3339 (with any
 * fraction, as Go accepts after the seconds), RFC1123Z `Mon, 02 Jan 2006 15:04:05 -0700`.
 * Anything else is refused — including the StampMilli lines hubble prints (`Jan  2 15:04:05.000`),
 * which carry no year: hubble refuses them too rather than guessing one.
 *
 * Times are exact to the nanosecond (a Timestamp), as the CLI sends them.
 */
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { create } from '@bufbuild/protobuf';
import { TimestampSchema } from '@bufbuild/protobuf/wkt';

const UNIT_NS: Readonly<Record<string, bigint>> = {
  ns: 1n, us: 1_000n, 'µs': 1_000n, 'μs': 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n,
};
const MAX_DURATION = (1n << 63n) - 1n;

/** Go's time.ParseDuration, in nanoseconds; undefined when it is not a duration. */
export function parseGoDuration(s: string): bigint | undefined {
  let rest = s;
  let neg = false;
  if (rest[0] === '-' || rest[0] === '+') { neg = rest[0] === '-'; rest = rest.slice(1); }
  if (rest === '0') return 0n;
  if (rest === '') return undefined;
  let total = 0n;
  while (rest !== '') {
    const m = /^(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/.exec(rest);
    if (!m || (m[1] === '' && (m[2] ?? '') === '')) return undefined;
    const unit = UNIT_NS[m[3]!]!;
    let v = BigInt(m[1] || '0') * unit;
    // Go scales the fraction by the unit and truncates
    if (m[2]) v += (BigInt(m[2]) * unit) / 10n ** BigInt(m[2].length);
    total += v;
    if (total > MAX_DURATION + (neg ? 1n : 0n)) return undefined;
    rest = rest.slice(m[0].length);
  }
  return neg ? -total : total;
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

function daysIn(month: number, year: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

interface Parts { year: number; month: number; day: number; hour?: number; min?: number; sec?: number; nanos?: number; offsetMin?: number }

function fraction(f: string | undefined): number {
  if (!f) return 0;
  return Number(f.slice(1, 10).padEnd(9, '0')); // Go keeps nine digits, truncating
}

function tz(z: string): number | undefined {
  if (z === 'Z') return 0;
  const m = /^([+-])(\d{2}):?(\d{2})$/.exec(z)!;
  const h = Number(m[2]), mm = Number(m[3]);
  if (h > 24 || mm > 60) return undefined;
  return (m[1] === '-' ? -1 : 1) * (h * 60 + mm);
}

const ISO_TZ = '(Z|[+-]\\d{2}:\\d{2})';
const LAYOUTS: ((v: string) => Parts | undefined | null)[] = [
  (v) => { const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v); return m ? { year: +m[1]!, month: +m[2]!, day: +m[3]! } : undefined; },
  (v) => {
    const m = new RegExp(`^(\\d{4})-(\\d{2})-(\\d{2})T(\\d{1,2})${ISO_TZ}$`).exec(v);
    return m ? { year: +m[1]!, month: +m[2]!, day: +m[3]!, hour: +m[4]!, offsetMin: tz(m[5]!) } : undefined;
  },
  (v) => {
    const m = new RegExp(`^(\\d{4})-(\\d{2})-(\\d{2})T(\\d{1,2}):(\\d{2})${ISO_TZ}$`).exec(v);
    return m ? { year: +m[1]!, month: +m[2]!, day: +m[3]!, hour: +m[4]!, min: +m[5]!, offsetMin: tz(m[6]!) } : undefined;
  },
  (v) => {
    const m = new RegExp(`^(\\d{4})-(\\d{2})-(\\d{2})T(\\d{1,2}):(\\d{2}):(\\d{2})([.,]\\d+)?${ISO_TZ}$`).exec(v);
    return m ? { year: +m[1]!, month: +m[2]!, day: +m[3]!, hour: +m[4]!, min: +m[5]!, sec: +m[6]!, nanos: fraction(m[7]), offsetMin: tz(m[8]!) } : undefined;
  },
  (v) => {
    const m = /^([A-Za-z]{3}), (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{1,2}):(\d{2}):(\d{2})([.,]\d+)? ([+-]\d{4})$/.exec(v);
    if (!m || !WEEKDAYS.includes(m[1]!.toLowerCase())) return undefined;
    const month = MONTHS.indexOf(m[3]!.toLowerCase()) + 1;
    if (!month) return undefined;
    return { year: +m[4]!, month, day: +m[2]!, hour: +m[5]!, min: +m[6]!, sec: +m[7]!, nanos: fraction(m[8]), offsetMin: tz(m[9]!) };
  },
];

function toTimestamp(p: Parts): Timestamp | undefined {
  const { year, month, day, hour = 0, min = 0, sec = 0, nanos = 0, offsetMin = 0 } = p;
  if (month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || min > 59 || sec > 59) return undefined;
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, min, sec, 0);
  const seconds = BigInt(Math.floor(d.getTime() / 1000)) - BigInt(offsetMin * 60);
  return create(TimestampSchema, { seconds, nanos });
}

/** A time the hubble CLI accepts for --since/--until; undefined if it refuses it. */
export function parseHubbleTime(input: string, nowNs: bigint = BigInt(Date.now()) * 1_000_000n): Timestamp | undefined {
  const d = parseGoDuration(input);
  if (d !== undefined) {
    const t = nowNs - d;
    const sec = t >= 0n ? t / 1_000_000_000n : -((-t + 999_999_999n) / 1_000_000_000n);
    return create(TimestampSchema, { seconds: sec, nanos: Number(t - sec * 1_000_000_000n) });
  }
  for (const layout of LAYOUTS) {
    const p = layout(input);
    if (!p) continue;
    if (p.offsetMin === undefined && 'offsetMin' in p) continue;
    const t = toTimestamp(p);
    if (t) return t;
  }
  return undefined;
}
