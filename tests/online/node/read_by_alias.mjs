// Reads a person's online features by any alias (anonymous id, device id...) using nothing but
// docs/online-key-spec.md: one FCALL_RO resolves the alias and reads the features in Redis.
// Usage: node read_by_alias.mjs REDIS_URL NAMESPACE VIEW IDENTIFIER_TYPE IDENTIFIER
//   -> JSON {"version": v, "person_id": ..., "features": {...}}
import { createClient, RESP_TYPES } from "redis";
import { decode } from "@msgpack/msgpack";

const [url, ns, view, identifierType, identifier] = process.argv.slice(2);
const client = createClient({ url }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
await client.connect();

// One round trip: pointer -> alias -> person's key, read by the store's function in one step.
const [[version, person, value]] = await client.sendCommand(
  ["FCALL_RO", "fs_get_by_alias", "1", `${ns}:{${view}}:current`, identifierType, identifier, ns, view],
  { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } },                  // values are MessagePack bytes
);
if (version === null) throw new Error(`view ${view} has no serving version`);
// The version's schema (cache it by (view, version) in a real reader: it never changes).
const meta = JSON.parse((await client.hGet(`${ns}:{${view}}:versions`, version.toString())).toString());
const { features, dtypes } = meta.schema;

function convert(v, dtype) {
  if (v === null) return null;
  if (dtype.startsWith("List(Float32") || dtype.startsWith("Array(Float32")) {
    const buf = Buffer.from(v);
    return Array.from({ length: buf.length / 4 }, (_, i) => buf.readFloatLE(i * 4));
  }
  return v;
}

const decoded = value === null ? features.map(() => null) : decode(value);
const row = {};
features.forEach((name, i) => { row[name] = convert(decoded[i], dtypes[i]); });
process.stdout.write(JSON.stringify({
  version: Number(version.toString()), person_id: person === null ? null : person.toString(), features: row,
}) + "\n");
await client.quit();
