// Reads a view's online features using nothing but docs/online-key-spec.md (no Python, no catalog).
// Usage: node read_features.mjs REDIS_URL NAMESPACE VIEW ID...   -> JSON array, one object per id
import { createClient, RESP_TYPES } from "redis";
import { decode } from "@msgpack/msgpack";

const [url, ns, view, ...ids] = process.argv.slice(2);
const client = createClient({ url }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
await client.connect();

const current = await client.get(`${ns}:{${view}}:current`);           // serving version
if (current === null) throw new Error(`view ${view} has no serving version`);
const meta = JSON.parse((await client.hGet(`${ns}:{${view}}:versions`, current)).toString());
const { features, dtypes } = meta.schema;
const keys = ids.map((id) => `${ns}:${view}:${current}:{${id}}`);       // data keys, hash-tagged by id
const values = await client.mGet(keys);

function isoMicros(us) {                                                  // int microseconds since epoch, UTC
  const ms = Math.floor(us / 1000);
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "." + String(((us % 1e6) + 1e6) % 1e6).padStart(6, "0") + "Z");
}

function convert(value, dtype) {
  if (value === null) return null;
  if (dtype.startsWith("Datetime")) return isoMicros(Number(value));
  if (dtype.startsWith("List(Float32") || dtype.startsWith("Array(Float32")) {
    const buf = Buffer.from(value);
    return Array.from({ length: buf.length / 4 }, (_, i) => buf.readFloatLE(i * 4));
  }
  return value;
}

const rows = values.map((blob) => {
  const row = {};
  const decoded = blob === null ? features.map(() => null) : decode(blob);
  features.forEach((name, i) => { row[name] = convert(decoded[i], dtypes[i]); });
  return row;
});
process.stdout.write(JSON.stringify(rows) + "\n");
await client.quit();
