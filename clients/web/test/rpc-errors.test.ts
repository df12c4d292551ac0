/**
 * Error details survive the Connect protocol in JSON (what the app ships with): the
 * BadRequest field violations and the RetryInfo delay come out readable.
 */

import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import { BadRequestSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { TaskService } from "../src/gen/tasks/v1/tasks_pb.js";
import { fieldViolations, retryDelaySeconds } from "../src/rpc-errors.js";

function failingWith(error: ConnectError) {
  const transport = createRouterTransport(
    (router) =>
      router.service(TaskService, {
        createTask: () => {
          throw error;
        },
      }),
    { transport: { useBinaryFormat: false } },
  );
  return createClient(TaskService, transport).createTask({ title: "" });
}

describe("rpc errors", () => {
  it("reads BadRequest field violations by field", async () => {
    const answer = failingWith(
      new ConnectError("title: must not be empty", Code.InvalidArgument, undefined, [
        {
          desc: BadRequestSchema,
          value: create(BadRequestSchema, {
            fieldViolations: [
              { field: "title", description: "must not be empty" },
              { field: "due_time", description: "must be in the future" },
            ],
          }),
        },
      ]),
    );
    const error = await answer.catch((failure: unknown) => failure);
    expect(fieldViolations(error)).toEqual({ title: "must not be empty", due_time: "must be in the future" });
    expect(retryDelaySeconds(error)).toBeUndefined();
  });

  it("reads RetryInfo as whole seconds, rounded up", async () => {
    const answer = failingWith(
      new ConnectError("too many attempts", Code.ResourceExhausted, undefined, [
        { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(29_200) }) },
      ]),
    );
    const error = await answer.catch((failure: unknown) => failure);
    expect(retryDelaySeconds(error)).toBe(30);
    expect(fieldViolations(error)).toEqual({});
  });
});
