#!/usr/bin/env node
// Command line entry point: `mq9-edge [serve]`, `check-config FILE`, `--version`.

import { ConfigError, Mq9Error } from "./errors.js";
import { loadConfig, readConfigFile, usage } from "./ops/config.js";
import { VERSION } from "./ops/version.js";
import { runBroker } from "./broker.js";

const EXIT_USAGE = 2;

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--version") || argv[0] === "version") {
    process.stdout.write(`mq9-edge ${VERSION} (node ${process.versions.node})\n`);
    return 0;
  }
  if (argv.includes("--help") || argv.includes("-h") || argv[0] === "help") {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  let loaded;
  try {
    // Loaded only for these commands: the NATS client and fetch are not the broker's.
    if (argv[0] === "status") return await (await import("./ops/commands.js")).statusCommand(argv.slice(1));
    if (argv[0] === "mailbox") return await (await import("./ops/commands.js")).mailboxCommand(argv.slice(1));
    if (argv[0] === "check-config") {
      const file = argv[1];
      if (file === undefined) throw new ConfigError("check-config", "needs a FILE");
      readConfigFile(file);
      loaded = loadConfig(["--config", file], {});
      process.stdout.write(`${file}: ok\n`);
      return 0;
    }
    loaded = loadConfig(argv);
    if (loaded.command !== "serve") throw new ConfigError(loaded.command, "unknown command (see --help)");
  } catch (err) {
    if (err instanceof Mq9Error) {
      process.stderr.write(`mq9-edge: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  return runBroker(loaded);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mq9-edge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
