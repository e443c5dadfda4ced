import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { Logger } from "../log.ts";
import { formatPolicyErrors, type LoadResult, loadPolicyFile, loadPolicyText } from "./load.ts";
import type { Policy } from "./policy.ts";

export interface PolicyHolderOptions {
  logger: Logger;
  /** Applied to every loaded policy (e.g. command-line overrides of the store). */
  transform?: (policy: Policy) => Policy;
  onChange?: (policy: Policy, previous: Policy) => void;
  onReject?: (result: Extract<LoadResult, { ok: false }>) => void;
  debounceMs?: number;
}

/**
 * Holds the policy in force. A reload validates the whole new file first and swaps the
 * reference only when it is valid, so a request always sees one complete policy and a
 * broken edit never takes effect.
 */
export class PolicyHolder {
  readonly #path: string;
  readonly #options: PolicyHolderOptions;
  #current: Policy;
  #watchers: FSWatcher[] = [];
  #debounce: NodeJS.Timeout | undefined;
  #reloading: Promise<LoadResult> | undefined;
  #again = false;
  reloadsApplied = 0;
  reloadsRejected = 0;
  lastReloadAt: Date | undefined;

  constructor(path: string, initial: Policy, options: PolicyHolderOptions) {
    this.#path = resolve(path);
    this.#current = initial;
    this.#options = options;
  }

  get current(): Policy {
    return this.#current;
  }

  /**
   * The file as a reload sees it. An empty file is refused here (though `validate` accepts
   * it as all defaults): a reload that catches an editor or `echo >` between truncating
   * and writing must not swap every tenant out for the defaults. The emptiness is judged on
   * the very text that is parsed: a size checked first and the file read after could see
   * two different moments of the same write.
   */
  async #read(): Promise<LoadResult> {
    let text: string;
    try {
      text = await readFile(this.#path, "utf8");
    } catch {
      // loadPolicyFile reports a missing or unreadable file in its usual words.
      return loadPolicyFile(this.#path);
    }
    if (text.trim() === "") {
      return {
        ok: false,
        errors: [{ path: "", message: "the file is empty (caught mid-write?); not applied" }],
      };
    }
    return loadPolicyText(text);
  }

  /** Re-reads the file; concurrent calls coalesce into one more read after the running one. */
  reload(): Promise<LoadResult> {
    if (this.#reloading) {
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = this.#reloadOnce().finally(() => {
      this.#reloading = undefined;
      if (this.#again) {
        this.#again = false;
        void this.reload();
      }
    });
    return this.#reloading;
  }

  async #reloadOnce(): Promise<LoadResult> {
    const result = await this.#read();
    this.lastReloadAt = new Date();
    if (!result.ok) {
      this.reloadsRejected += 1;
      this.#options.logger.warn("policy reload rejected; the previous policy stays in force", {
        file: this.#path,
        version: this.#current.version,
        errors: formatPolicyErrors(this.#path, result.errors).split("\n"),
      });
      this.#options.onReject?.(result);
      return result;
    }
    const next = this.#options.transform ? this.#options.transform(result.policy) : result.policy;
    if (next.version === this.#current.version) return result;
    const previous = this.#current;
    this.#current = next;
    this.reloadsApplied += 1;
    this.#options.logger.info("policy reloaded", {
      file: this.#path,
      version: next.version,
      previous: previous.version,
    });
    this.#options.onChange?.(next, previous);
    return result;
  }

  /** Watches the file and its directory: editors replace files by rename, and Kubernetes
   * swaps ConfigMap contents through a `..data` symlink, neither of which a watch on the
   * file alone reliably sees. */
  watch(): void {
    if (this.#watchers.length > 0) return;
    const schedule = () => {
      clearTimeout(this.#debounce);
      this.#debounce = setTimeout(() => void this.reload(), this.#options.debounceMs ?? 100);
      this.#debounce.unref();
    };
    const name = basename(this.#path);
    const directory = watch(dirname(this.#path), (_event, changed) => {
      if (changed === null || changed === name || String(changed) === "..data") schedule();
    });
    directory.unref();
    directory.on("error", (error) =>
      this.#options.logger.warn("policy directory watch failed", { error: String(error) }),
    );
    this.#watchers.push(directory);
    try {
      const file = watch(this.#path, schedule);
      file.unref();
      file.on("error", () => {
        // The file was replaced; the directory watch carries on.
      });
      this.#watchers.push(file);
    } catch {
      // The directory watch alone still sees replacements.
    }
  }

  close(): void {
    clearTimeout(this.#debounce);
    for (const watcher of this.#watchers) watcher.close();
    this.#watchers = [];
  }
}
