// test/suite.js inside workerd: POST /run with the suite's env as JSON (vectors, servers' URLs and
// workerd's own pid, whose memory the runner's server reads); answers the results as JSON. The
// plugin is a module of the worker, as workerd wants (it compiles no wasm at run time).
import plugin from './plugin.wasm';
import { run } from './suite.js';

export default {
  async fetch(request) {
    if (request.method !== 'POST') return new Response(null, { status: 204 }); // the runner's probe
    const env = await request.json();
    env.wasm = plugin;
    env.rss = async () => Number(await (await fetch(`${env.aux}/rss?pid=${env.pid}`)).text());
    return Response.json(await run(env));
  },
};
