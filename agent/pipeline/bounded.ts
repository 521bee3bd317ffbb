/**
 * Runs `work` for each item with at most `depth` items in flight (each holds its blocks in
 * memory, so `depth` bounds memory). Items are pulled from the source only as slots free up, so
 * a long block map is never expanded into thousands of waiting closures. On the first failure
 * no further item starts; the items already running are awaited (none keeps writing after the
 * caller has moved on, e.g. closed the target), then the first failure is thrown.
 */
export async function forEachBounded<T>(items: AsyncIterable<T> | Iterable<T>, depth: number, work: (item: T) => Promise<void>): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { error: unknown } | null = null;
  for await (const item of items) {
    if (failure) break;
    const job: Promise<void> = work(item)
      .catch((error: unknown) => {
        failure ??= { error };
      })
      .finally(() => running.delete(job));
    running.add(job);
    while (running.size >= Math.max(1, depth)) await Promise.race(running);
  }
  await Promise.all(running);
  if (failure) throw (failure as { error: unknown }).error;
}
