/**
 * The benchmark's file server: serves the files of one directory on
 * 127.0.0.1 with `Content-Length`, `Last-Modified` and an `ETag`, streaming
 * each file from disk in large reads. Prints `{"port":N}` on one line, then serves until killed;
 * `GET /_stats` answers the number of requests per file as JSON.
 *
 * ```sh
 * deno run -A dev/bench_server.ts /tmp/assisted-bootloader-bench
 * ```
 *
 * @module
 */

const CHUNK = 1 << 20;
/** GET/HEAD requests per file name, served at `/_stats`. */
const requests = new Map<string, number>();

/** Starts the server for `dir`; resolves to the port. */
export function serveDirectory(dir: string, port = 0): Promise<number> {
  const { promise, resolve } = Promise.withResolvers<number>();
  Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => resolve(port),
  }, async (req) => {
    const name = decodeURIComponent(new URL(req.url).pathname.slice(1));
    if (name === "_stats") return Response.json(Object.fromEntries(requests));
    requests.set(name, (requests.get(name) ?? 0) + 1);
    if (name.includes("/") || name.startsWith(".") || name === "") {
      return new Response("not found\n", { status: 404 });
    }
    let file: Deno.FsFile;
    try {
      file = await Deno.open(`${dir}/${name}`);
    } catch {
      return new Response("not found\n", { status: 404 });
    }
    const info = await file.stat();
    const size = info.size;
    // Validators as a real image server sends them (the cache needs one).
    const headers = {
      "content-length": String(size),
      "content-type": "application/octet-stream",
      "last-modified": (info.mtime ?? new Date(0)).toUTCString(),
      "etag": `"${size.toString(16)}-${
        (info.mtime?.getTime() ?? 0).toString(16)
      }"`,
      "accept-ranges": "none",
    };
    if (req.method === "HEAD") {
      file.close();
      return new Response(null, { headers });
    }
    const body = new ReadableStream<Uint8Array>({
      type: "bytes",
      autoAllocateChunkSize: CHUNK,
      async pull(c) {
        const controller = c as ReadableByteStreamController;
        const view = controller.byobRequest!.view!;
        const n = await file.read(
          new Uint8Array(view.buffer, view.byteOffset, view.byteLength),
        );
        if (n === null) {
          file.close();
          controller.close();
          controller.byobRequest?.respond(0);
          return;
        }
        controller.byobRequest!.respond(n);
      },
      cancel() {
        file.close();
      },
    });
    return new Response(body, { headers });
  });
  return promise;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: bench_server.ts DIR [PORT]");
    Deno.exit(2);
  }
  const port = await serveDirectory(dir, Number(Deno.args[1] ?? 0));
  console.log(JSON.stringify({ port }));
}
