/** Structured JSON-lines logging. Injected everywhere so tests can capture or silence it. */

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLogger(
  options: { level?: LogLevel; write?: (line: string) => void; now?: () => Date } = {},
): Logger {
  const threshold = ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const now = options.now ?? (() => new Date());
  const emit = (level: LogLevel, message: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    write(JSON.stringify({ time: now().toISOString(), level, msg: message, ...fields }));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Collects log records in memory, for tests that assert on what was logged. */
export function memoryLogger(): Logger & {
  records: Array<{ level: LogLevel; msg: string } & Record<string, unknown>>;
} {
  const records: Array<{ level: LogLevel; msg: string } & Record<string, unknown>> = [];
  const push = (level: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    records.push({ level, msg, ...fields });
  };
  return { records, debug: push("debug"), info: push("info"), warn: push("warn"), error: push("error") };
}

/** The same logger with `fields` on every record (e.g. which `serve --workers` worker wrote it). */
export function loggerWith(logger: Logger, fields: Record<string, unknown>): Logger {
  return {
    debug: (m, f) => logger.debug(m, { ...fields, ...f }),
    info: (m, f) => logger.info(m, { ...fields, ...f }),
    warn: (m, f) => logger.warn(m, { ...fields, ...f }),
    error: (m, f) => logger.error(m, { ...fields, ...f }),
  };
}
