/**
 * Waiting for a condition in a test: the one polling helper of the unit and integration tests.
 */

type Falsy = undefined | null | false | 0 | '';

/**
 * Calls `fn` until it returns (or resolves to) a truthy value and returns that value; after `ms`
 * it throws "timed out waiting for <what>" with the last error `fn` threw, if any. An error
 * thrown by `fn` counts as "not yet": a condition read from a process or a socket that is still
 * starting fails before it holds.
 *
 * The poll interval grows with the budget (1/100 of it, 10 ms to 500 ms): a 2 s unit wait does
 * not sleep away half its budget, and a one-minute wait whose every check spawns a process does
 * not run ten checks a second on a shared machine.
 */
export async function until<T>(what: string, fn: () => T | Falsy | PromiseLike<T | Falsy>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  const every = Math.min(500, Math.max(10, Math.round(ms / 100)));
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
