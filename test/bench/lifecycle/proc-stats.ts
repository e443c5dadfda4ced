import { readdirSync, readFileSync } from "node:fs";

/** A process's scheduler counters, summed over its threads (V8's and libuv's included). */
export interface ProcessTimes {
  /** Time on a CPU, ns. */
  cpuNs: number;
  /** Time runnable but waiting for a CPU, ns: what a shared machine takes away. */
  waitNs: number;
}

/**
 * From the kernel's own counters: /proc/PID/task/TID/schedstat (time on CPU, time waiting
 * on a run queue, in ns), falling back to utime + stime of /proc/PID/stat (clock ticks;
 * no wait time).
 */
export function processTimes(pid: number): ProcessTimes {
  try {
    const times = { cpuNs: 0, waitNs: 0 };
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const [onCpu, waiting] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ");
        times.cpuNs += Number(onCpu);
        times.waitNs += Number(waiting);
      } catch {
        // The thread exited between the listing and the read.
      }
    }
    return times;
  } catch {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(")")[1]?.trim().split(" ") ?? [];
    // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based, proc(5)).
    const ticks = Number(fields[11]) + Number(fields[12]);
    return { cpuNs: (ticks * 1e9) / 100, waitNs: 0 };
  }
}

export function timesBetween(before: ProcessTimes, after: ProcessTimes): ProcessTimes {
  return { cpuNs: after.cpuNs - before.cpuNs, waitNs: after.waitNs - before.waitNs };
}

/** A process and its child processes (a `serve --workers` primary and its workers). */
export function processTree(pid: number): number[] {
  const children: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const listed = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
      if (listed) children.push(...listed.split(" ").map(Number));
    }
  } catch {
    // Exited, or a kernel without the children file: the process alone.
  }
  return [pid, ...children.flatMap(processTree)];
}

export function sumTimes(times: readonly ProcessTimes[]): ProcessTimes {
  return {
    cpuNs: times.reduce((sum, t) => sum + t.cpuNs, 0),
    waitNs: times.reduce((sum, t) => sum + t.waitNs, 0),
  };
}
