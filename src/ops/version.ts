// The version comes from package.json, so there is one place to bump it. Compiled
// code sits at dist/ops/ (product) or .test-build/src/ops/ (tests).
function readVersion(): string {
  try {
    return (require("../../package.json") as { version: string }).version;
  } catch {
    return (require("../../../package.json") as { version: string }).version;
  }
}
export const VERSION: string = readVersion();
