/** Waits for `work` or until `deadline` (epoch ms), whichever comes first; never rejects. */
export function untilDeadline(work: Promise<unknown> | undefined, deadline: number): Promise<void> {
  if (!work) return Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const expiry = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
  });
  const settled = work.then(
    () => undefined,
    () => undefined,
  );
  return Promise.race([settled, expiry]).finally(() => clearTimeout(timer));
}
