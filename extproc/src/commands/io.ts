/** Where a command writes; injected so commands run in-process in tests. */
export interface CommandIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

export const processIo: CommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/**
 * Parses a command's flags. Returns the values, or the exit code when the command is done:
 * 2 after a flag error (printed with the usage), 0 after --help.
 */
export function parseFlags<T extends { help?: boolean | undefined }>(
  command: string,
  args: string[],
  io: CommandIo,
  usage: string,
  parse: (args: string[]) => T,
): T | number {
  let values: T;
  try {
    values = parse(args);
  } catch (error) {
    io.stderr(`fairgate ${command}: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    io.stdout(usage);
    return 0;
  }
  return values;
}
