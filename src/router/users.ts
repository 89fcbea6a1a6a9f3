// The users a broker accepts (nats-server's authorization.users): a name, a password
// (plain, or a bcrypt hash as `nats server passwd` writes it) and permissions. Checked
// the same way for NATS and MQTT. bcrypt is slow on purpose (~150 ms at cost 11 on x64,
// several times that on a gateway's core): it runs asynchronously, and a name and password
// that passed are remembered (as a keyed hash) so a reconnecting client does not pay again.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import bcrypt from "bcryptjs";
import { Permissions, type PermissionSpec } from "./permissions.js";

export interface UserSpec {
  user: string;
  password: string;
  permissions?: PermissionSpec;
}

interface User {
  password: string;
  bcrypt: boolean;
  permissions: Permissions | null;
}

const MAX_REMEMBERED = 1024;

export class Users {
  private readonly byName = new Map<string, User>();
  private readonly key = randomBytes(32);
  private readonly passed = new Set<string>();

  constructor(specs: readonly UserSpec[]) {
    for (const u of specs) {
      this.byName.set(u.user, {
        password: u.password,
        bcrypt: /^\$2[abxy]\$\d\d\$/.test(u.password),
        permissions: u.permissions === undefined ? null : new Permissions(u.permissions),
      });
    }
  }

  get size(): number {
    return this.byName.size;
  }

  /** The user's permissions (null: none, everything allowed) if the password is right, else undefined. */
  async authenticate(user: string | undefined, password: string | undefined): Promise<Permissions | null | undefined> {
    if (user === undefined || password === undefined) return undefined;
    const u = this.byName.get(user);
    if (u === undefined) {
      // As long as a wrong password, so that names cannot be told apart by timing.
      if (this.anyBcrypt()) await bcrypt.compare(password, DUMMY_HASH);
      return undefined;
    }
    if (!u.bcrypt) return safeEqual(password, u.password) ? u.permissions : undefined;
    const mark = createHmac("sha256", this.key).update(user).update("\0").update(password).digest("base64");
    if (this.passed.has(mark)) return u.permissions;
    if (!(await bcrypt.compare(password, u.password))) return undefined;
    if (this.passed.size >= MAX_REMEMBERED) this.passed.clear();
    this.passed.add(mark);
    return u.permissions;
  }

  private anyBcrypt(): boolean {
    for (const u of this.byName.values()) if (u.bcrypt) return true;
    return false;
  }
}

// A hash of a random password nobody knows, for the unknown-user path.
const DUMMY_HASH = "$2b$11$.rPTGbpNrhvVfPFW3/OVeesl54OIz/LfOa1DXSJRn.kKE5swM7SW.";

function safeEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
