"""Guess my number, as two steps that loop: ``step_ask`` waits, ``step_check`` compares.

    tinywf run flows/guess_game_2.py
    tinywf resolve <run> guess 50

Each visit of ``step_ask`` is a fresh visit with the same event key ``guess``; its resume
id (``guess@2``, ``guess@4``, ...) tells visits apart.
"""

import random
from typing import Annotated

from pydantic import BaseModel, Field

from tinywf_cli import Workflow, step

Guess = Annotated[int, Field(ge=0, le=100)]


class GameState(BaseModel):
    number: Guess | None = None
    hint: str = ""
    answers: list[int] = []


def pick_number() -> int:
    """The secret, chosen once."""
    return random.randint(0, 100)


class GuessGame2(Workflow[GameState]):
    """Guess a number between 0 and 100, one step visit per guess."""

    @step
    def step_begin(self):
        if self.state.number is None:
            self.state.number = yield self.action("generate_num", pick_number)
        self.state.hint = "Guess a number between 0 and 100"
        return self.step_ask

    @step
    def step_ask(self):
        guess = yield self.wait_event("guess", type=Guess, question=self.state.hint)
        self.state.answers.append(guess)
        return self.step_check

    @step
    def step_check(self):
        last = self.state.answers[-1]
        if last == self.state.number:
            return self.step_end
        relation = "smaller" if last < self.state.number else "greater"
        self.state.hint = f"{last} is {relation} than the number - guess again (0-100)"
        return self.step_ask

    @step
    def step_end(self):
        rounds = len(self.state.answers)
        self.state.hint = ""
        self.log("congratulation", rounds=rounds, number=self.state.number,
                 message=f"You needed {rounds} rounds to guess {self.state.number}. Congratulations!")
        return None
