import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatDateTime, formatExpire, parseBackyDate } from '../../shared/domain/dates.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';

describe('parseBackyDate', () => {
  it.each([
    ['2026-03-01', '2026-03-01T00:00:00.000Z'],
    ['2026-03-01 13:14:15', '2026-03-01T13:14:15.000Z'],
    ['2026-03-01T13:14:15', '2026-03-01T13:14:15.000Z'],
    ['  2024-02-29 23:59:59 ', '2024-02-29T23:59:59.000Z'],
    ['1999-12-31', '1999-12-31T00:00:00.000Z'],
  ])('accepts %j as %s (UTC)', (text, iso) => {
    expect(parseBackyDate(text)).toBe(iso);
  });

  it.each([
    '2026-3-1',
    '01.03.2026',
    '2026-02-30',
    '2025-02-29',
    '2026-13-01',
    '2026-00-10',
    '2026-03-01 24:00:00',
    '2026-03-01 12:60:00',
    '2026-03-01 12:00:60',
    '2026-03-01 12:00',
    '2026-03-01T12:00:00Z',
    '2026-03-01T12:00:00+02:00',
    '2026-03-01 12:00:00.5',
    'tomorrow',
    '',
  ])('refuses %j with a usage error (1) that names what and shows the formats', (text) => {
    let thrown: unknown;
    try {
      parseBackyDate(text, 'expire date');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(Backy2Error);
    expect((thrown as Backy2Error).exitCode).toBe(ExitCode.usage);
    expect((thrown as Backy2Error).message).toContain(`Invalid expire date "${text}"`);
    expect((thrown as Backy2Error).message).toContain('YYYY-MM-DD');
  });

  it('round-trips every second-precision instant through both printed formats', () => {
    fc.assert(
      fc.property(fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true }), (d) => {
        const iso = new Date(Math.floor(d.getTime() / 1000) * 1000).toISOString();
        const printed = formatDateTime(iso);
        expect(printed).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
        expect(parseBackyDate(printed)).toBe(iso);
        expect(parseBackyDate(printed.replace(' ', 'T'))).toBe(iso);
      }),
    );
  });
});

describe('formatExpire', () => {
  it('prints midnight as a day, other times in full, none as empty', () => {
    expect(formatExpire('2026-03-01T00:00:00.000Z')).toBe('2026-03-01');
    expect(formatExpire('2026-03-01T00:00:01.000Z')).toBe('2026-03-01 00:00:01');
    expect(formatExpire(null)).toBe('');
  });
});
