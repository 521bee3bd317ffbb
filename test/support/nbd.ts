/** Helpers for the NBD tests: a running `backy2 nbd` and the real NBD client tools. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { RunningCli } from './cli.ts';

const exec = promisify(execFile);

export interface RunningNbd {
  cli: RunningCli;
  port: number;
  url: (exportName: string) => string;
  /** SIGTERM, then the CLI's result (a clean stop exits 0). */
  stop(signal?: NodeJS.Signals): Promise<{ code: number; stderr: string }>;
}

/** Waits for "listening on HOST:PORT" (started with -p 0: any free port). */
export async function nbdStarted(cli: RunningCli): Promise<RunningNbd> {
  await cli.waitForStderr(/NBD server listening on [^ ]+:\d+/);
  const port = Number(/NBD server listening on [^ ]+:(\d+)/.exec(cli.stderrSoFar())![1]);
  return {
    cli,
    port,
    url: (name) => `nbd://127.0.0.1:${port}/${name}`,
    async stop(signal = 'SIGTERM') {
      cli.child.kill(signal);
      const r = await cli.result;
      return { code: r.code, stderr: r.stderr };
    },
  };
}

/** Runs a client tool (nbdcopy, nbdinfo, qemu-io, …); never throws: the test asserts the code. */
export async function tool(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? err.message };
  }
}

import { connect, type Socket } from 'node:net';

/**
 * A deliberately simple NBD client written from the protocol document, for the bad-input tests
 * (real tools never send garbage): exact reads, raw writes, and the few messages the tests need.
 */
export class RawNbd {
  private buf = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | null = null;
  readonly socket: Socket;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  static open(port: number): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port }, () => resolve(new RawNbd(s)));
      s.once('error', reject);
    });
  }

  /** Exactly n bytes, or null when the server closed the connection first. */
  async read(n: number, timeoutMs = 20_000): Promise<Buffer | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) return null;
      if (Date.now() > deadline) throw new Error(`no ${n} bytes from the server within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection (within the timeout). */
  async closedByServer(timeoutMs = 20_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return this.ended;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Reads the greeting and answers with the fixed-newstyle + no-zeroes client flags. */
  async greet(): Promise<void> {
    const g = await this.read(18);
    if (!g || g.toString('latin1', 0, 8) !== 'NBDMAGIC' || g.toString('latin1', 8, 16) !== 'IHAVEOPT') throw new Error('bad greeting');
    this.write(u32(3));
  }

  option(option: number, data: Buffer = Buffer.alloc(0)): void {
    this.write(Buffer.concat([Buffer.from('IHAVEOPT', 'latin1'), u32(option), u32(data.length), data]));
  }

  /** One option reply: its type and data. */
  async optionReply(): Promise<{ option: number; type: number; data: Buffer } | null> {
    const h = await this.read(20);
    if (!h) return null;
    const data = (await this.read(h.readUInt32BE(16))) ?? Buffer.alloc(0);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** NBD_OPT_GO (7) with no information requests; resolves with the final reply type. */
  async go(name: string): Promise<number> {
    const n = Buffer.from(name);
    this.option(7, Buffer.concat([u32(n.length), n, Buffer.from([0, 0])]));
    for (;;) {
      const r = await this.optionReply();
      if (!r) return -1;
      if (r.type !== 3) return r.type;
    }
  }

  request(type: number, offset: number, length: number, cookie = 1n, payload?: Buffer, flags = 0): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** A simple reply: error and cookie (the data of a successful read is read by the caller). */
  async simpleReply(): Promise<{ error: number; cookie: bigint } | null> {
    const h = await this.read(16);
    if (!h) return null;
    if (h.readUInt32BE(0) !== 0x67446698) throw new Error(`not a simple reply: ${h.toString('hex')}`);
    return { error: h.readUInt32BE(4), cookie: h.readBigUInt64BE(8) };
  }
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
