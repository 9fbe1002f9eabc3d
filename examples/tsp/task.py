"""Short tours: a Euclidean travelling-salesman task, defined as a selftaught user task."""

import numpy as np

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Short tours through random cities. algorithm_str must define algorithm(cities) -> tour,
    where cities is an array of shape (n, 2) with n between 20 and 60 points in the unit
    square and tour is a permutation of range(n) (the order of the visits; the tour returns
    to its start). Scores each tour by nearest_neighbour_length / tour_length, capped at 1,
    averaged over 20 instances. At most 1 second per instance; a tour that is not a
    permutation of range(n) scores 0.
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0
    total = 0.0
    for _ in range(20):
        cities = np.random.rand(np.random.randint(20, 61), 2)
        tour = algorithm(cities.copy())
        total += min(1.0, tour_length(cities, nearest_neighbour_tour(cities)) / tour_length(cities, tour)) / 20
    return total
'''


def tour_length(cities, tour):
    ordered = cities[np.asarray(tour)]
    return float(np.sum(np.linalg.norm(ordered - np.roll(ordered, -1, axis=0), axis=1)))


def nearest_neighbour_tour(cities):
    tour, left = [0], set(range(1, len(cities)))
    while left:
        here = cities[tour[-1]]
        nearest = min(left, key=lambda city: float(np.sum((cities[city] - here) ** 2)))
        tour.append(nearest)
        left.remove(nearest)
    return tour


def make_instance(seed):
    generator = np.random.RandomState(seed)
    cities = generator.rand(generator.randint(20, 61), 2)
    return (cities,), tour_length(cities, nearest_neighbour_tour(cities))


def score(arguments, answer, output):
    (cities,) = arguments
    n = len(cities)
    # An array must be a flat one: len() of a 0-d array raises TypeError, which would blame this scorer.
    if not isinstance(output, (list, tuple, np.ndarray)) or getattr(output, "ndim", 1) != 1 or len(output) != n:
        raise ValueError(f"the tour must list all {n} cities")
    # Whatever a solution returns, only ValueError may come out: anything else is a bug of this scorer's.
    try:
        tour = [int(city) for city in output]
        as_floats = np.asarray(output, dtype=float)
    except (TypeError, ValueError, OverflowError):  # OverflowError: infinity, or an int too large for a float
        raise ValueError("the tour must hold city indices") from None
    if any(city != float(raw) for city, raw in zip(tour, as_floats)) or sorted(tour) != list(range(n)):
        raise ValueError(f"the tour must be a permutation of range({n})")
    return min(1.0, answer / tour_length(cities, tour))
