// A Worker for test/durable.test.js: two of it run in one workerd, "a" owning the Durable Object
// namespace of TokenCoordinator and "b" bound to the same one, as two Workers of a fleet.
//   POST /token  {request, client}: client.token(request) on client number `client` of this isolate
//                (several clients per isolate stand for more isolates racing on the one object)
//   POST /cache  {op, key, value, ttl_ms, nx, if_value}: one operation of a DurableObjectCache
//   GET  /stored every entry the object holds, as stored (what is at rest), and its alarm
// The plugin is a module of the worker; the cache's key comes from a secret binding (CACHE_KEY).
import { createClient, DurableObjectCache, TokenCoordinator } from '../src/edge.js';
import plugin from './plugin.wasm';

/** TestCoordinator is TokenCoordinator that also answers GET /stored with its storage and alarm. */
export class TestCoordinator extends TokenCoordinator {
  #state;
  constructor(state, env) {
    super(state, env);
    this.#state = state;
  }
  async fetch(request) {
    if (request.method === 'GET' && new URL(request.url).pathname === '/stored') {
      const { storage } = this.#state;
      return Response.json({ entries: Object.fromEntries(await storage.list()), alarm: await storage.getAlarm() });
    }
    return super.fetch(request);
  }
}

const clients = new Map(); // client number -> Promise<Client>, for the isolate's life

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    const cache = new DurableObjectCache(env.COORD, { keys: [env.CACHE_KEY] });
    if (request.method === 'GET' && pathname === '/stored') {
      return env.COORD.get(env.COORD.idFromName('tokenwasm')).fetch('https://coordinator/stored');
    }
    if (request.method !== 'POST') return new Response(null, { status: 204 }); // the runner's probe
    const body = await request.json();
    if (pathname === '/token') {
      const n = body.client ?? 0;
      if (!clients.has(n)) clients.set(n, createClient({ wasm: plugin, allowLoopback: true, instances: 1, cache }));
      return Response.json(await (await clients.get(n)).token(body.request));
    }
    if (pathname === '/cache') {
      const { op, key, value, ttl_ms: ttlMs, nx, if_value: ifValue } = body;
      if (op === 'get') return Response.json({ value: (await cache.get(key)) ?? null });
      if (op === 'set') return Response.json({ stored: await cache.set(key, value, ttlMs, nx) });
      if (op === 'delete') return Response.json(((await cache.delete(key, ifValue)), {}));
      if (op === 'name') return Response.json({ name: await cache.storageKey(key) });
    }
    return new Response('not found', { status: 404 });
  },
};
