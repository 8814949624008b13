/** Byte counts as people read them, the same way everywhere kiln prints one (du, prune, a full disk). */

/** Human-readable bytes: `512B`, `1.50KiB`, `13.7MiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v}B` : `${v.toFixed(v < 10 ? 2 : 1)}${units[i]}`;
}
