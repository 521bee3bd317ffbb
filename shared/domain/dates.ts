import { usageError } from './errors.ts';

/** backy2's accepted date formats (`-e`, `expire`): YYYY-MM-DD, YYYY-MM-DD HH:MM:SS, YYYY-MM-DDTHH:MM:SS, all UTC. */
export function parseBackyDate(text: string, what = 'date'): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2}))?$/.exec(text.trim());
  if (m) {
    const [y, mo, d, h = '0', mi = '0', s = '0'] = m.slice(1).map((x) => x ?? '0') as string[];
    const date = new Date(Date.UTC(+y!, +mo! - 1, +d!, +h, +mi, +s));
    const roundTrips = date.getUTCFullYear() === +y! && date.getUTCMonth() === +mo! - 1 && date.getUTCDate() === +d! && +h < 24 && +mi < 60 && +s < 60;
    if (roundTrips) return date.toISOString();
  }
  throw usageError(`Invalid ${what} "${text}": use YYYY-MM-DD, "YYYY-MM-DD HH:MM:SS" or YYYY-MM-DDTHH:MM:SS`);
}

/** As backy2 prints dates: "2017-04-17 11:54:07" (UTC). */
export const formatDateTime = (iso: string) => iso.slice(0, 19).replace('T', ' ');

/** Expiry dates print as a day when they fall on midnight. */
export const formatExpire = (iso: string | null) => (iso === null ? '' : iso.slice(11, 19) === '00:00:00' ? iso.slice(0, 10) : formatDateTime(iso));
