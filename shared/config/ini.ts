/**
 * The subset of Python's configparser that backy2 configs use: `[section]`, `key: value`
 * or `key = value`, `#`/`;` comments, indented continuation lines. Keys are lower-cased.
 */
export type IniSections = Record<string, Record<string, string>>;

export function parseIni(text: string, source: string): IniSections {
  const sections: IniSections = {};
  let current: Record<string, string> | null = null;
  let lastKey: string | null = null;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/\s+$/, '');
    if (/^\s*([#;]|$)/.test(line)) return;
    if (/^\s/.test(line) && current && lastKey) {
      current[lastKey] += '\n' + line.trim();
      return;
    }
    const section = /^\[([^\]]+)\]$/.exec(line.trim());
    if (section) {
      current = sections[section[1]!.trim()] ??= {};
      lastKey = null;
      return;
    }
    const kv = /^([^:=]+?)\s*[:=]\s*(.*)$/.exec(line);
    if (kv && !current) throw new Error(`${source} line ${i + 1}: "${kv[1]!.trim()}" appears before any [section]`);
    if (!kv || !current) throw new Error(`${source} line ${i + 1}: expected [section] or key: value, got "${line.trim()}"`);
    lastKey = kv[1]!.trim().toLowerCase();
    current[lastKey] = kv[2]!.replace(/\s+[#;].*$/, '');
  });
  return sections;
}
