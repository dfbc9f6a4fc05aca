// A small typed client of the blog example, written against the types that
// openapi-typescript generates from `GET /api/v1/openapi.json`. The conformance test
// copies this file next to the generated `openapi.ts` and runs `tsc --noEmit --strict`.
//
// It reaches every type through the document's structure (path, method, status, media
// type) rather than through schema names where it can, so it keeps compiling when the
// document renames a component, and stops compiling when an operation, a status code,
// a field or a field's type goes missing or changes. The `@ts-expect-error` lines make
// it fail when a type is too loose (`any`, an index signature, a missing enum, a
// writable server-set field).

import type { components, paths } from "./openapi";

// ---------------------------------------------------------------------------------
// Type-level helpers.

/** `true` only when `A` and `B` are the same type (not merely assignable). */
type Equals<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only for `true`. */
type Assert<T extends true> = T;
/** `true` when `T` is `any`. */
type IsAny<T> = 0 extends 1 & T ? true : false;

/** The JSON body of one response (or request body) object, whatever its media type. */
type JsonOf<R> = R extends { content: infer C } ? C[keyof C] : never;

// ---------------------------------------------------------------------------------
// The shapes, found by path, method and status.

type Collection = paths["/api/v1/posts"];
type Item = paths["/api/v1/posts/{id}"];

type ListBody = JsonOf<Collection["get"]["responses"][200]>;
type ListQuery = NonNullable<Collection["get"]["parameters"]["query"]>;
type CreateBody = JsonOf<NonNullable<Collection["post"]["requestBody"]>>;
type CreatedBody = JsonOf<Collection["post"]["responses"][201]>;
type CreateInvalid = JsonOf<Collection["post"]["responses"][400]>;
type ItemBody = JsonOf<Item["get"]["responses"][200]>;
type UpdateBody = JsonOf<NonNullable<Item["patch"]["requestBody"]>>;
type ItemPath = Item["get"]["parameters"]["path"];

type Post = ListBody["data"][number];
type ApiError = components["schemas"]["Error"];

// The exact JSON shape of SPEC §5: `application/json` is a media type the list answers.
type ListJson = Collection["get"]["responses"][200]["content"]["application/json"];
export type _ListIsJson = Assert<Equals<ListJson, ListBody>>;

// Nothing the client reads may be `any`.
export type _NotAny = [
  Assert<Equals<IsAny<ListBody>, false>>,
  Assert<Equals<IsAny<Post>, false>>,
  Assert<Equals<IsAny<CreateBody>, false>>,
  Assert<Equals<IsAny<CreatedBody>, false>>,
  Assert<Equals<IsAny<ApiError>, false>>,
];

// Field types of a post. Every property of a record is optional in the document, since
// `fields=` may leave any of them out; `Required` looks at the types alone.
type FullPost = Required<Post>;
export type _PostFields = [
  Assert<Equals<FullPost["id"], string>>,
  Assert<Equals<FullPost["version"], number>>,
  Assert<Equals<FullPost["title"], string>>,
  Assert<Equals<FullPost["slug"], string>>,
  Assert<Equals<Exclude<FullPost["status"], null>, "draft" | "published">>,
  Assert<Equals<Exclude<FullPost["content"], null>, string>>,
  Assert<Equals<FullPost["author"], string>>,
  Assert<Equals<FullPost["created_at"], string>>,
  Assert<Equals<FullPost["updated_at"], string>>,
];

// The list envelope: `meta.nextCursor` is always there, a cursor or null.
export type _Envelope = [
  Assert<Equals<ListBody["meta"]["limit"], number>>,
  Assert<Equals<ListBody["meta"]["nextCursor"], string | null>>,
];

// A created post, a fetched post and a listed post are the same record shape.
export type _SameRecord = [
  Assert<Equals<CreatedBody["data"], Post>>,
  Assert<Equals<ItemBody["data"], Post>>,
];

// A validation failure of create is the one error shape.
export type _OneErrorShape = Assert<Equals<CreateInvalid, ApiError>>;

// ---------------------------------------------------------------------------------
// Values: what a client would write.

const query: ListQuery = {
  filter: "status = 'published'",
  sort: "-created_at,title",
  limit: 10,
};

// Fields with a default (status, author = @auth.id) and optional ones may be left out.
const draft: CreateBody = { title: "Hello", slug: "hello" };
const full: CreateBody = {
  title: "Hello again",
  slug: "hello-again",
  content: "Some text",
  status: "published",
};

// @ts-expect-error title is required
const untitled: CreateBody = { slug: "no-title" };
// @ts-expect-error status is one of the enum's values
const archived: CreateBody = { title: "Old", slug: "old", status: "archived" };
// @ts-expect-error id is server-set: the create body has no such field
const withId: CreateBody = { title: "Mine", slug: "mine", id: "01J0000000000000000000000" };
// @ts-expect-error version is server-set
const withVersion: CreateBody = { title: "Mine", slug: "mine", version: 7 };
// @ts-expect-error unknown fields are rejected by the API, so the type has none
const withExtra: CreateBody = { title: "Mine", slug: "mine", nope: true };
// @ts-expect-error the list's data is an array of posts
const notAList: ListBody["data"] = 42;

// Every field of an update is optional (JSON merge patch).
const publish: UpdateBody = { status: "published" };
const nothing: UpdateBody = {};
// @ts-expect-error updated_at is server-set
const touch: UpdateBody = { updated_at: "2024-01-01T00:00:00Z" };

const where: ItemPath = { id: "0190a5c0-0000-7000-8000-000000000000" };

/** What a client shows for any error the API answers. */
function describe(failure: ApiError): string {
  const { code, message, requestId } = failure.error;
  const detail: unknown = failure.error.details;
  return `${code}: ${message} (request ${requestId})${detail === undefined ? "" : " " + JSON.stringify(detail)}`;
}

const problem: ApiError = {
  error: { code: "NOT_FOUND", message: "unknown resource 'nope'", requestId: "01J" },
};

/** Titles of a page, and where the next one starts. */
function titles(page: ListBody): { titles: string[]; next: string | null } {
  return { titles: page.data.map((post: Post) => post.title ?? ""), next: page.meta.nextCursor };
}

/** A post's fields as a client shows them. */
function summary(post: Post): string {
  const content: string | null | undefined = post.content;
  return `${post.id ?? "?"} v${post.version ?? 0} ${post.status ?? ""} ${post.title ?? ""} ${content ?? ""}`;
}

/** Server-set fields are read-only in the record type. */
function tamper(post: Post): void {
  // @ts-expect-error id is read-only
  post.id = "0190a5c0-0000-7000-8000-000000000000";
  // @ts-expect-error version is read-only
  post.version = 2;
}

/** The record a successful create returns. */
function created(body: CreatedBody): Post {
  return body.data;
}

export const uses = [
  query,
  draft,
  full,
  untitled,
  archived,
  withId,
  withVersion,
  withExtra,
  notAList,
  publish,
  nothing,
  touch,
  where,
  describe(problem),
  titles,
  summary,
  tamper,
  created,
];
