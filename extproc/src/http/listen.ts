import type { Server } from "node:http";

/** Splits a HOST:PORT listen address (":9090" and "[::1]:9090" included) for net.listen. */
export function splitListen(listen: string): { host: string | undefined; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen.trim());
  if (!match) throw new Error(`invalid listen address "${listen}"; expected HOST:PORT`);
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (port > 65_535) throw new Error(`invalid port in "${listen}"`);
  return { host: host === "" ? undefined : host, port };
}

/** gRPC wants "host:port"; an empty host means every interface. */
export function grpcBindAddress(listen: string): string {
  const { host, port } = splitListen(listen);
  if (host === undefined) return `0.0.0.0:${port}`;
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Starts `server` listening on a HOST:PORT address; rejects on a bind error. */
export function listenOn(server: Server, listen: string): Promise<void> {
  const { host, port } = splitListen(listen);
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
