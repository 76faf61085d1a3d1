// The pages on a cluster (docs/cluster.md), in real Chromium: a recorder on one node,
// viewers on another fed by its replica from a real `nats-server -js`. The first viewer
// there plays from a keyframe, so the replica reads the log from the newest keyframe
// cluster; a blob-mode viewer after it needs the generation whole, which the replica
// then fetches. Outside CI a missing nats-server skips this check, loudly; under CI it
// fails it (.ci/run installs the Debian package).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, recorderUrl, waitUntil, assertPlays, sleep } from './harness.mjs';

function natsServerBinary() {
  const known = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => existsSync(p));
  if (known) return known;
  for (const dir of (process.env.PATH || '').split(':')) {
    if (dir && existsSync(join(dir, 'nats-server'))) return join(dir, 'nats-server');
  }
  return null;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/** A `nats-server -js` on a free port with its store in a temporary folder. */
async function startNats(binary) {
  const port = await freePort();
  const store = mkdtempSync(join(tmpdir(), 'blobcast-nats-'));
  const proc = spawn(binary, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  const deadline = Date.now() + 10000;
  for (;;) {
    if (await accepts(port)) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`nats-server did not listen on ${port}`);
    await sleep(50);
  }
  return {
    url,
    async stop() {
      if (proc.exitCode === null && !proc.signalCode) {
        proc.kill('SIGTERM');
        await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(3000)]);
        if (proc.exitCode === null && !proc.signalCode) proc.kill('SIGKILL');
      }
      rmSync(store, { recursive: true, force: true });
    },
  };
}

/** Whether something accepts connections on `port`. */
function accepts(port) {
  return new Promise((r) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.end();
      r(true);
    });
    socket.on('error', () => r(false));
  });
}

/** Asserts that `node` logged a line holding `text` (what it means: `what`), and prints it. */
function assertLogged(node, text, what) {
  const line = node.log.find((l) => l.includes(text));
  assert.ok(line, `${what}:\n${node.log.slice(-10).join('\n')}`);
  console.log(`     ${line.replace(/^.*cluster: /, '')}`);
}

export function clusterTests(test, ctx) {
  test('cluster: on a node fed by NATS, an mse viewer joins at the keyframe its replica started from and a blob viewer after it gets the generation whole; both play', async () => {
    const binary = natsServerBinary();
    if (!binary) {
      if (process.env.CI) throw new Error('nats-server is not installed; under CI that is a failure (.ci/run installs it)');
      console.log('     SKIPPED: nats-server is not installed (apt-get install nats-server)');
      return;
    }
    const stream = 'clustered';
    const opened = [];
    const nats = await startNats(binary);
    const nodes = [];
    try {
      for (const name of ['browser-1', 'browser-2']) {
        nodes.push(await startServer(['--nats', nats.url, '--node-name', name]));
      }
      const [origin, edge] = nodes;
      const rec = await ctx.open(recorderUrl(origin.url, { stream, ...ctx.PATTERN, restart: 10 }), 'recorder on node 1');
      opened.push(rec);
      await ctx.waitLive(rec);
      // 3-5 s into a generation (keyframes every 1 s, the directory rewritten every
      // second): the newest keyframe cluster is well past the first.
      await waitUntil(rec, () => {
        const age = Date.now() - window.blobcastRecorder.generation;
        return age >= 3000 && age <= 5000;
      }, null, 15000, 'a generation 3-5 s old');

      const mse = await ctx.open(`${edge.url}/watch/${stream}?mode=mse`, 'mse viewer on node 2');
      opened.push(mse);
      await ctx.waitFrames(mse);
      assertLogged(edge, 'reading on from the newest keyframe cluster', "node 2's replica started from a keyframe cluster");
      const { hello, jumps } = await mse.evaluate(() => ({
        hello: window.blobcastViewer.viewer.conn.hellos.find((h) => h.live),
        jumps: window.blobcastViewer.viewer.reassembler.jumps.length,
      }));
      assert.equal(hello.join, 'live', 'the mse viewer joined at the live edge');
      assert.equal(jumps, 1, 'one intended jump, from the init segment to the keyframe cluster');

      const blob = await ctx.open(`${edge.url}/watch/${stream}?mode=blob`, 'blob viewer on node 2');
      opened.push(blob);
      await ctx.waitFrames(blob);
      assertLogged(edge, 'fetched the start of generation', "node 2's replica fetched what it skipped");
      const blobHello = await blob.evaluate(() => window.blobcastViewer.viewer.conn.hellos.find((h) => h.live));
      assert.equal(blobHello.join, 'start', 'the blob viewer got the generation whole');
      for (const v of [mse, blob]) {
        await v.bringToFront();
        await assertPlays(v, { fps: 'source' });
      }
    } finally {
      await ctx.closeAll(opened);
      for (const node of nodes) await node.stop();
      await nats.stop();
    }
  }, { timeout: 90000 });
}
