/**
 * Whether a process of this host is running (signal 0 probes without signalling). EPERM: it
 * runs under another user. Used to tell leftovers of killed processes (temporary files, locks,
 * copy-on-write overlays) from those of running ones.
 */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
