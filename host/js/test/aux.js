// The runner's loopback server, for the cases the Go fakes do not script (test/suite.js):
//   /issue/<id>?delay=ms  a token tok-<id>-<n> (n counts from 1), after delay ms
//   /rl/<id>              429 with Retry-After: 30
//   /count/<id>           how many requests /issue or /rl had for id
//   /api/<id>?reject=T    an API: 401 for "Bearer T" (or for any token with reject=all), else 200
//   /rss?pid=N            the resident memory of process N in bytes (workerd cannot tell its own)
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';

export async function startAux() {
  const counts = new Map();
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const [, route, id] = url.pathname.split('/');
    req.resume();
    req.on('end', () => {
      const text = (status, body, headers = {}) => {
        res.writeHead(status, { 'Content-Type': 'text/plain', ...headers });
        res.end(body);
      };
      if (route === 'issue' || route === 'rl') {
        const n = (counts.get(id) ?? 0) + 1;
        counts.set(id, n);
        if (route === 'rl') return text(429, '{"message":"Too Many Requests"}', { 'Retry-After': '30', 'Content-Type': 'application/json' });
        const body = JSON.stringify({ access_token: `tok-${id}-${n}`, token_type: 'Bearer', expires_in: 3600 });
        return setTimeout(() => text(200, body, { 'Content-Type': 'application/json' }), Number(url.searchParams.get('delay') ?? 0));
      }
      if (route === 'count') return text(200, String(counts.get(id) ?? 0));
      if (route === 'api') {
        const auth = req.headers.authorization ?? '';
        const reject = url.searchParams.get('reject');
        if (reject === 'all' || auth === `Bearer ${reject}`) return text(401, 'unauthorized');
        return text(200, `hello ${auth.replace(/^Bearer /, '')}`);
      }
      if (route === 'rss') {
        const status = readFileSync(`/proc/${Number(url.searchParams.get('pid'))}/status`, 'utf8');
        return text(200, String(Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024));
      }
      text(404, 'no such route');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}
