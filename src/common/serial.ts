/**
 * One-at-a-time execution of async tasks (a read-modify-write of a state file, an ADD against a
 * DEL of the same container): each task starts after the previous one settled, whatever its
 * outcome, and its own result or error goes to its caller only.
 */
export type Serial = <T>(task: () => Promise<T>) => Promise<T>;

export function createSerial(): Serial {
  let chain: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const p = chain.then(task, task);
    chain = p.catch(() => {});
    return p;
  };
}
