// `${VAR}` and `${VAR:-default}` in string values, applied after YAML parsing so that a
// substituted value can never inject YAML structure. `$${` stands for a literal `${`.
export interface SubstitutionError {
  path: PropertyKey[];
  message: string;
}

const REFERENCE = /\$(\$)?\{([^}]*)\}/g;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export type Env = Readonly<Record<string, string | undefined>>;

function substituteString(text: string, env: Env, secret: boolean, onError: (message: string) => void): string {
  return text.replace(REFERENCE, (whole, escaped: string | undefined, body: string) => {
    if (escaped) return whole.slice(1);
    const sep = body.indexOf(':-');
    const name = sep === -1 ? body : body.slice(0, sep);
    if (!NAME.test(name)) {
      // In a secret the text between the braces may be part of the credential (a default, a typo'd token).
      const shown = secret ? '' : ` "\${${body}}"`;
      onError(`invalid variable reference${shown}: expected \${NAME} or \${NAME:-default}`);
      return whole;
    }
    const value = env[name];
    if (value !== undefined && value !== '') return value;
    if (sep !== -1) return body.slice(sep + 2);
    if (value === '') return '';
    onError(`environment variable ${name} is not set (use \${${name}:-default} to make it optional)`);
    return whole;
  });
}

/** `isSecret(path)` says which values must not be quoted in an error. */
export function substituteEnv(value: unknown, env: Env, isSecret: (path: readonly PropertyKey[]) => boolean): { value: unknown; errors: SubstitutionError[] } {
  const errors: SubstitutionError[] = [];
  const visit = (v: unknown, path: PropertyKey[]): unknown => {
    if (typeof v === 'string') return substituteString(v, env, isSecret(path), (message) => errors.push({ path, message }));
    if (Array.isArray(v)) return v.map((item, i) => visit(item, [...path, i]));
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, item]) => [k, visit(item, [...path, k])]));
    }
    return v;
  };
  return { value: visit(value, []), errors };
}
