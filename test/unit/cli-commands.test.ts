import { Command } from 'commander';
import { describe, expect, test } from 'vitest';
import { COMMANDS, namedCommand, registerCommands } from '../../agent/cli/commands.ts';

const names = (program: Command) => program.commands.map((c) => c.name());
const quiet = () => new Command('backy2').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });

describe('the CLI loads only the module of the command it runs', () => {
  test.each(COMMANDS.map(([n, load]) => [n.join(', '), n, load] as const))('%s: its module registers exactly these names', async (_label, expected, load) => {
    const program = quiet();
    (await load()).register(program);
    expect(names(program)).toEqual(expected);
  });

  test('a command line naming no known command registers every command, in help order', async () => {
    for (const args of [[], ['--help'], ['-V'], ['help', 'restore'], ['restorr', 'x']]) {
      const program = quiet();
      await registerCommands(program, args);
      expect(names(program)).toEqual(COMMANDS.flatMap(([n]) => n));
    }
    expect(new Set(COMMANDS.flatMap(([n]) => n)).size).toBe(COMMANDS.flatMap(([n]) => n).length);
  });

  test('a typo still gets the suggestion of the command meant', async () => {
    const program = quiet();
    await registerCommands(program, ['restorr']);
    expect(() => program.parse(['restorr'], { from: 'user' })).toThrow(/unknown command 'restorr'.*Did you mean restore\?/s);
  });

  test('a command line naming one registers that one (and a pair, both)', async () => {
    const restore = quiet();
    await registerCommands(restore, ['-c', 'backy.cfg', 'restore', 'uid', 'file://out']);
    expect(names(restore)).toEqual(['restore']);
    const unprotect = quiet();
    await registerCommands(unprotect, ['unprotect', 'uid']);
    expect(names(unprotect)).toEqual(['protect', 'unprotect']);
  });

  test.each([
    [['restore', 'uid', 'file://out'], 'restore'],
    [['-c', 'ls', 'restore', '-c', '3'], 'restore'],
    [['--configfile', 'ls', 'backup'], 'backup'],
    [['--configfile=ls', 'scrub'], 'scrub'],
    [['-mc', 'ls', 'du'], 'du'],
    [['-cls', 'stats'], 'stats'],
    [['-m', '-s', '-r', '-v', '-d', '--json', 'ls'], 'ls'],
    [['--', 'nbd'], 'nbd'],
    [['-V'], undefined],
    [['-c', 'backy.cfg'], undefined],
    [[], undefined],
  ] as const)('%j names %s', (args, expected) => {
    expect(namedCommand(args)).toBe(expected);
  });
});
