/*
 * engine.h - the execution engine's contract with the rest of the library.
 *
 * The engine (src/backend/, the only folder that includes oneDNN) turns a
 * model's graph into a plan of oneDNN primitives per batch size and mode
 * and runs it.  It implements the public distill_model_forward(),
 * distill_model_read_node(), distill_model_backward() and
 * distill_model_input_grad() of distill/model.h, so the rest of the
 * library calls it through those; its internals are in engine_impl.h.
 *
 * Per model it keeps an engine_state: the cached plans and what the last
 * forward left for read_node and backward.  The model (src/nn/graph.h)
 * holds it as an opaque `struct engine_state *` and a release hook that the
 * engine installs when it creates the state; the model calls the hook
 * whenever its graph changes and when it is freed.  That way src/nn neither
 * includes nor calls into src/backend: the dependency runs one way, from
 * the engine to the graph (nn/graph.h), with no include cycle and no call
 * cycle.  (The alternative, src/nn calling an engine_free() declared here,
 * would have kept src/nn linking against the backend for one call.)
 */
#ifndef DISTILL_ENGINE_H
#define DISTILL_ENGINE_H

/* The engine's per-model state (engine_impl.h). */
typedef struct engine_state engine_state;

/* Release a model's engine state: its plans, primitives and arenas
 * (accepts NULL).  Installed as distill_model.engine_release. */
void engine_state_free(engine_state *es);

#endif /* DISTILL_ENGINE_H */
