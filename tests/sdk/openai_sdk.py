"""The official openai Python SDK against aigw's unified endpoint.

Usage: python openai_sdk.py BASE_URL MODEL
Runs a chat completion, a stream, and tool calls (plain and streamed); every
response and chunk must parse in the SDK's own types. Exits non-zero with a
message on the first failure.
"""

import json
import sys

from openai import OpenAI

base_url, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key="unused-by-the-gateway", max_retries=0)
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]

# Chat.
r = client.chat.completions.create(model=model, messages=messages, max_tokens=64)
assert r.object == "chat.completion", r
assert r.choices[0].finish_reason == "stop", r
assert r.choices[0].message.role == "assistant"
assert r.choices[0].message.content.startswith("The quick brown fox"), r.choices[0].message.content
assert r.usage.completion_tokens == 16 and r.usage.prompt_tokens > 0, r.usage

# Stream, with usage.
text, finish, usage = "", None, None
for chunk in client.chat.completions.create(
    model=model, messages=messages, max_tokens=64, stream=True, stream_options={"include_usage": True}
):
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert finish == "stop", finish
assert usage is not None and usage.completion_tokens == 16, usage

# Tools.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a place",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    }
]
ask = [{"role": "user", "content": "Weather in Paris?"}]
r = client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="auto", max_tokens=64)
call = r.choices[0].message.tool_calls[0]
assert r.choices[0].finish_reason == "tool_calls", r
assert call.type == "function" and call.function.name == "get_weather", call
assert json.loads(call.function.arguments) == {"location": "Paris"}, call.function.arguments

# The tool's result goes back; the model answers in text.
followup = ask + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
]
r2 = client.chat.completions.create(model=model, messages=followup, tools=tools, max_tokens=64)
assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content, r2

# Streamed tool call: name first, then argument deltas.
name, args, finish = None, "", None
for chunk in client.chat.completions.create(model=model, messages=ask, tools=tools, max_tokens=64, stream=True):
    if not chunk.choices:
        continue
    for tc in chunk.choices[0].delta.tool_calls or []:
        name = tc.function.name or name
        args += tc.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
assert name == "get_weather" and json.loads(args) == {"location": "Paris"}, (name, args)
assert finish == "tool_calls", finish

# Errors come back as OpenAI errors the SDK raises.
try:
    client.chat.completions.create(model="no-such/model", messages=messages)
    raise AssertionError("expected an error")
except Exception as e:  # openai.NotFoundError
    assert getattr(e, "status_code", None) == 404, e

print("ok", model)
