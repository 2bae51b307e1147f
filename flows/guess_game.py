"""Guess my number: every question is an event, asked in a loop inside one step.

    tinywf run flows/guess_game.py                       # in a terminal: play at the prompt
    tinywf resolve <run> ask_0 50                        # or answer from a script

An empty answer at the prompt leaves the run waiting; `tinywf resolve` continues it later.
"""

import random
from typing import Annotated

from pydantic import BaseModel, Field

from tinywf_cli import Workflow, step

Guess = Annotated[int, Field(ge=0, le=100)]


class GameState(BaseModel):
    number: Guess | None = None
    answers: list[int] = []


def pick_number() -> int:
    """The secret: random, so it must be an action (chosen once, cached)."""
    return random.randint(0, 100)


class GuessGame(Workflow[GameState]):
    """Guess a number between 0 and 100; each guess is answered with a hint."""

    @step
    def step_begin(self):
        if self.state.number is None:
            self.state.number = yield self.action("generate_num", pick_number)
        return self.step_play

    @step
    def step_play(self):
        question = "Guess a number between 0 and 100"
        count = 0
        while True:
            guess = yield self.wait_event(f"ask_{count}", type=Guess, question=question)
            count += 1
            self.state.answers.append(guess)
            if guess == self.state.number:
                return self.step_end
            relation = "smaller" if guess < self.state.number else "greater"
            question = f"{guess} is {relation} than the number - guess again (0-100)"

    @step
    def step_end(self):
        rounds = len(self.state.answers)
        self.log("congratulation", rounds=rounds, number=self.state.number,
                 message=f"You needed {rounds} rounds to guess {self.state.number}. Congratulations!")
        return None
